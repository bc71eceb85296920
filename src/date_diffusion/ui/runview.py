"""The benchmark tab: a run directory's results table, plots, and a gallery of prompts x methods with verdicts."""

from __future__ import annotations

from pathlib import Path


def load_run(run_dir) -> dict:
    """The run's settings, results markdown, plot files and image records (ValueError when it is not a run)."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").exists():
        raise ValueError(f"{run_dir} is not a bench run (no run.json); give the --out folder of `date-diffusion bench`")
    from date_diffusion.bench.runner import trusted_records

    settings, methods, records = trusted_records(run_dir)  # UntrustedRun (a ValueError): what it cannot trust
    results = run_dir / "results.md"
    return {
        "dir": run_dir,
        "settings": settings,
        "markdown": results.read_text() if results.exists() else "(no results.md yet: run `date-diffusion report`)",
        "plots": sorted(str(p) for p in run_dir.glob("*.png")),
        "methods": methods,
        "records": records,
    }


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
    from date_diffusion.bench.runner import image_paths

    by_label = {m.label: m for m in run["methods"]}
    fixed = {(r["index"], r["seed"]): r for r in run["records"].get("fixed", [])}

    def item(label: str, record: dict, changed: bool = False) -> tuple[str, str]:
        png = image_paths(run["dir"], by_label[label], record["index"], record["seed"])[0]
        return str(png), caption(label, record, changed)

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
