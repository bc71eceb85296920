"""The per-step study of DATE with a learned judge: for each method of a toy-world bench run, how much one update
moves the judge's score at the step it acts and how often the finished image's verdict changes against `fixed`.

`python -m date_diffusion.bench.judge_study RUN_DIR` prints the table (markdown) for every DATE method of the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from date_diffusion.bench.runner import trusted_records
from date_diffusion.evaluation.stats import paired_difference


def _by_job(records: list[dict]) -> dict:
    return {(r["index"], r["seed"]): r for r in records}


def step_rows(run_dir: Path) -> list[dict]:
    """One row per DATE method of the run: update steps, mean judge change per update, exact change vs fixed
    (paired, 95% CI), and the share of images whose verdict went fail -> pass and pass -> fail."""
    run_dir = Path(run_dir)
    _, methods, by_method = trusted_records(run_dir)
    fixed = _by_job(by_method["fixed"])
    rows = []
    for method in methods:
        if getattr(method, "date", None) is None:
            continue
        records = [r for r in by_method[method.label] if (r["index"], r["seed"]) in fixed]
        base = [fixed[(r["index"], r["seed"])]["exact"] for r in records]
        exact = [r["exact"] for r in records]
        updates = [u for r in records for u in (r.get("trace") or {}).get("updates", []) if not u.get("skipped")]
        moved = [u["reward_after"] - u["reward_before"] for u in updates if u.get("reward_after") is not None]
        mean, lo, hi = paired_difference(exact, base)
        rows.append(
            {
                "method": method.label,
                "updates per image": len(updates) / max(1, len(records)),
                "judge change per update": float(np.mean(moved)) if moved else float("nan"),
                "exact vs fixed (pp)": f"{100 * mean:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]",
                "fail -> pass %": 100 * float(np.mean([e > b for e, b in zip(exact, base)])),
                "pass -> fail %": 100 * float(np.mean([e < b for e, b in zip(exact, base)])),
                "images": len(records),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    from date_diffusion.bench.report import table

    columns = list(rows[0])

    def text(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    cells = [(r["method"], [text(v) for v in list(r.values())[1:]]) for r in rows]
    return "\n".join(table(columns, cells))


if __name__ == "__main__":
    print(markdown(step_rows(Path(sys.argv[1]))))
