"""The benchmark tab: a run directory's results table, plots, and a gallery of prompts x methods with verdicts."""

from __future__ import annotations

from pathlib import Path

PLOT_LIMIT = 1 << 28  # bytes: a plot the report draws is far smaller


def view_files(run_dir) -> list[str]:
    """The plot files of a run (what the run view reads besides the records), each a regular file, never a link
    (`schemas.not_a_file`: a FIFO would hang the page, a folder named `x.png` fail it; a link would serve a file
    from elsewhere), ValueError naming the first that is not. Needs no torch (`ui --run` checks it before any
    work)."""
    from date_diffusion.schemas import not_a_file

    run_dir = Path(run_dir)
    plots = sorted(str(p) for p in run_dir.glob("*.png"))
    for plot in plots:
        why = "a symbolic link" if Path(plot).is_symlink() else not_a_file(plot, PLOT_LIMIT)
        if why:
            raise ValueError(f"{plot} is {why}, not a plot of the run; remove it, or run `date-diffusion report "
                             f"{run_dir}` to draw the plots again")  # fmt: skip
    return plots


def load_run(run_dir, shown) -> dict:
    """The run's settings, results markdown, plot files and image records (ValueError when it is not a run, or while
    a bench process makes it). The page shows copies made in the folder `shown` (the page's own, served as it is):
    each image checked against its record as it is copied (`runner.verified_copy`), so the images shown under their
    verdicts are the ones verified, and the plots as they were at start, whatever changes in the run folder later."""
    run_dir, shown = Path(run_dir), Path(shown)
    if not (run_dir / "run.json").exists():
        raise ValueError(f"{run_dir} is not a bench run (no run.json); give the --out folder of `date-diffusion bench`")
    from date_diffusion.bench.report import incomplete_note
    from date_diffusion.bench.runner import read_trusted, run_lock, verified_copy

    with run_lock(run_dir, exclusive=True) as held:  # as `report`: never a run read while a bench writes it
        if not held:
            raise ValueError(f"another process holds the run {str(run_dir)!r} (a bench making its images, or a report "
                             "or a page reading it): start the page with --run after it ends (it would show a part "
                             "of the run)")  # fmt: skip
        trusted = read_trusted(run_dir)  # UntrustedRun (a ValueError): what it cannot trust
        settings, methods, records = trusted.run, trusted.methods, trusted.records
        try:  # an error writing a copy is the page's folder's (a full disk), said in the tab
            plots = [_copied_plot(plot, shown, run_dir) for plot in view_files(run_dir)]
            images = {(m.label, r["index"], r["seed"]): str(verified_copy(run_dir, m, r, shown))
                      for m in methods for r in records[m.label]}  # fmt: skip
        except OSError as err:
            raise ValueError(f"the page could not copy the run's files into its own folder {str(shown)!r} ({err}); "
                             "free space there (its temporary folder) and start it again") from err  # fmt: skip
    return {
        "dir": run_dir,
        "settings": settings,
        "markdown": records_markdown(settings, records, incomplete_note(trusted.missing)),
        "plots": plots,
        "methods": methods,
        "records": records,
        "images": images,
    }


def _copied_plot(plot: str, shown: Path, run_dir: Path) -> str:
    """A copy in `shown` of one of the run's plots (`view_files`): a PNG file, ValueError naming it otherwise; an
    error writing the copy is `shown`'s."""
    from date_diffusion.outputs import PNG_SIGNATURE
    from date_diffusion.schemas import read_small_bytes

    fix = f"remove it, or run `date-diffusion report {run_dir}` to draw the plots again"
    try:
        data = read_small_bytes(plot, PLOT_LIMIT)  # (`view_files` refused a link)
    except OSError as err:
        raise ValueError(f"{plot} is not readable as a plot of the run ({err}); {fix}") from err
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{plot} is not a PNG file, not a plot of the run; {fix}")
    shown.mkdir(parents=True, exist_ok=True)
    to = shown / Path(plot).name
    to.write_bytes(data)
    return str(to)


def records_markdown(settings: dict, records: dict, incomplete: str | None = None) -> str:
    """The results tables as `report` writes them (what an incomplete run lacks included), computed here from the
    verified records (never results.md, which may be older than the images or edited); FID, which needs the images'
    features, is `report`'s alone."""
    from date_diffusion.bench.report import markdown, summarize

    if not any(records.values()):
        return "(no images yet: `date-diffusion bench` makes them)"
    baseline = "fixed" if "fixed" in records else None
    text = markdown(summarize(records, baseline), baseline, settings, incomplete)
    return text + "\nComputed from the run's verified images; FID-CLIP: run `date-diffusion report` (results.md).\n"


def categories(run: dict) -> list[str]:
    return sorted({r["category"] for recs in run["records"].values() for r in recs})


VERDICTS = {1.0: "PASS", 0.0: "FAIL"}


def caption(label: str, record: dict, changed: bool = False) -> str:
    """The exact verdict first (a gallery cuts a long caption at its end), then the method, seed and prompt."""
    verdict = VERDICTS.get(record.get("exact"), "no verdict") + (" (changed)" if changed else "")
    return f"{verdict} | {label} | seed {record['seed']} | {record['prompt']}"


def gallery(run: dict, category: str | None = None, changed_only: bool = False) -> list[tuple[str, str]]:
    """(image path, caption) for every image, optionally one category; `changed_only`: only the (prompt, seed) pairs
    where a method's exact verdict differs from `fixed`'s, each as two items, the fixed image then the method's."""
    fixed = {(r["index"], r["seed"]): r for r in run["records"].get("fixed", [])}

    def item(label: str, record: dict, changed: bool = False) -> tuple[str, str]:
        return run["images"][label, record["index"], record["seed"]], caption(label, record, changed)

    items = []
    for m in run["methods"]:
        for r in run["records"][m.label]:
            if category and category != "all" and r["category"] != category:
                continue
            base = fixed.get((r["index"], r["seed"]))
            changed = m.label != "fixed" and base is not None and r.get("exact") != base.get("exact")
            if changed_only and not changed:
                continue
            items += [item("fixed", base), item(m.label, r, changed)] if changed_only else [item(m.label, r, changed)]
    return items
