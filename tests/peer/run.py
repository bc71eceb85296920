"""Run diffusers' own fast pipeline tests against the DATE pipelines: `python tests/peer/run.py [family ...]`.

For each family of `date_diffusion.families.all_families()` (or those named), this copies diffusers' test suite
(`tests/`) to a temporary folder, appends the offline stand-ins (`conftest_offline.py` beside this file) to its
`conftest.py`, finds the family's fast test classes by scanning `tests/pipelines/` for `pipeline_class = <stock>`,
writes next to each test file a module whose classes subclass them with `pipeline_class = <the DATE class>`, and runs
the stock classes and the subclasses (two pytest processes, each under a timeout). It prints one row per family:
how many tests stock passes, how many ours passes, and the tests stock passes that ours does not (and the reverse),
and writes the same as JSON (`--json`). Exit status 1 where ours misses a test stock passes.

In the subclasses, for the length of each test, the stock module's own name of the stock class (tests that build
`StableDiffusionPipeline(...)` directly) is bound to the DATE class, and so is `diffusers.pipelines.<DATE class
name>`: diffusers' `ReturnNameVisitor` (test_encode_prompt_works_in_isolation) reads a pipeline's `encode_prompt`
source from there, which finds no class outside diffusers otherwise.

A family whose stock class the installed diffusers lacks, or whose DATE module does not exist (yet), or whose stock
class no test class names, is reported as such. Not collected by pytest (its name is not `test_*`).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STANDINS = HERE / "conftest_offline.py"
# where diffusers' suite is looked for, first found wins (`--suite` or DATE_PEER_SUITE name another)
SUITE_PLACES = (REPO / "shared/peer/diffusers/tests", REPO.parent / "shared/peer/diffusers/tests")
# a test class decorated with one of these, or named with one of these words, is not a fast test
NOT_FAST = ("slow", "nightly", "Slow", "Nightly", "Integration")
GENERATED = "test_date_peer_{stem}.py"
PREFIX = "TestDATE_"

# A pytest plugin (`-p peer_report`): one JSON line per test with its outcome, written as each test ends, so that a
# run stopped by its timeout still tells what it got through.
REPORT_PLUGIN = """
import json, os

_OUT = os.environ["PEER_REPORT"]
_CLASSES = tuple(c + "::" for c in json.loads(os.environ["PEER_CLASSES"]))
_seen = {}


def pytest_collection_modifyitems(config, items):
    # the files are named on the command line (a class named there that fails to import would stop the whole run)
    keep = [item for item in items if item.nodeid.startswith(_CLASSES)]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


def pytest_runtest_logreport(report):
    state = _seen.setdefault(report.nodeid, "passed")
    if report.skipped and state == "passed":
        state = "skipped"
    if report.failed:
        state = "failed" if report.when == "call" else "error"
    _seen[report.nodeid] = state
    if report.when == "teardown":
        with open(_OUT, "a") as file:
            file.write(json.dumps({"nodeid": report.nodeid, "outcome": state}) + "\\n")


def pytest_collectreport(report):
    if report.failed:
        with open(_OUT, "a") as file:
            file.write(json.dumps({"nodeid": report.nodeid, "outcome": "collect-error",
                                   "message": str(report.longrepr)[-2000:]}) + "\\n")
"""


@dataclass
class SuiteClass:
    """A fast test class of the suite: its file (relative to the suite's parent) and name."""

    file: str
    name: str

    @property
    def nodeid(self) -> str:
        return f"{self.file}::{self.name}"

    @property
    def ours(self) -> str:
        return f"{str(Path(self.file).parent / GENERATED.format(stem=Path(self.file).stem))}::{PREFIX}{self.name}"


@dataclass
class Result:
    family: str
    stock: str
    ours: str
    status: str  # ok, misses, no-stock, no-date, no-tests, error, timeout
    note: str = ""
    classes: list[str] = field(default_factory=list)
    stock_passed: list[str] = field(default_factory=list)
    ours_passed: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)  # stock passes, ours does not
    gains: list[str] = field(default_factory=list)  # ours passes, stock does not
    outcomes: dict = field(default_factory=dict)  # test -> {"stock": outcome, "ours": outcome}
    seconds: float = 0.0


def find_suite(given: str | None) -> Path:
    places = [Path(given)] if given else []
    if os.environ.get("DATE_PEER_SUITE") and not given:
        places.append(Path(os.environ["DATE_PEER_SUITE"]))
    places += [] if given else list(SUITE_PLACES)
    for place in places:
        if (place / "pipelines").is_dir() and (place / "conftest.py").is_file():
            return place.resolve()
    raise SystemExit(f"diffusers' tests/ not found (looked in {', '.join(map(str, places))}); name it with --suite")


def _base_names(node: ast.ClassDef) -> list[str]:
    return [ast.unparse(b).split(".")[-1] for b in node.bases]


def _names_stock(node: ast.ClassDef, stock: str) -> bool:
    for stmt in node.body:
        targets = [t.id for t in getattr(stmt, "targets", ()) if isinstance(t, ast.Name)]
        if "pipeline_class" in targets and ast.unparse(stmt.value).split(".")[-1] == stock:
            return True
    return False


def fast_test_classes(suite: Path, stock: str, all_classes: bool = False) -> list[SuiteClass]:
    """The test classes of `suite/pipelines` that run the stock class: a class that sets `pipeline_class = <stock>`
    (or inherits from one that does, in the same file), is collected by pytest (named `Test*` or a `TestCase`), is not
    a slow/nightly/integration class and, unless `all_classes`, runs the generic pipeline tests (`PipelineTesterMixin`
    among its ancestors): the text-to-image/video fast tests."""
    found = []
    for path in sorted((suite / "pipelines").rglob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        if f"pipeline_class = {stock}" not in text and not re.search(rf"pipeline_class\s*=\s*\w*\.?{stock}\b", text):
            continue
        classes = {n.name: n for n in ast.parse(text).body if isinstance(n, ast.ClassDef)}

        def ancestry(name, seen=()):
            node = classes.get(name)
            if node is None or name in seen:
                return [name]
            return [name] + [a for b in _base_names(node) for a in ancestry(b, (*seen, name))]

        for name, node in classes.items():
            lineage = ancestry(name)
            if not any(a in classes and _names_stock(classes[a], stock) for a in lineage):
                continue
            collected = name.startswith("Test") or "TestCase" in lineage
            decorators = [ast.unparse(d).split("(")[0].split(".")[-1] for d in node.decorator_list]
            slow = any(w in d for d in decorators for w in ("slow", "nightly")) or any(w in name for w in NOT_FAST)
            generic = all_classes or "PipelineTesterMixin" in lineage
            if collected and not slow and generic:
                found.append(SuiteClass(str(path.relative_to(suite.parent)), name))
    return found


def write_subclasses(root: Path, family: str, stock: str, classes: list[SuiteClass]) -> None:
    """Next to each test file: a module subclassing its classes with `pipeline_class = <the DATE class>`."""
    by_file: dict[str, list[SuiteClass]] = {}
    for cls in classes:
        by_file.setdefault(cls.file, []).append(cls)
    for file, members in by_file.items():
        path = root / file
        lines = [
            f"# Generated by date-diffusion's tests/peer/run.py: {path.name}'s fast tests with the DATE pipeline.",
            "import diffusers.pipelines",
            "import pytest",
            "",
            "from date_diffusion.families import by_name",
            "",
            f"from . import {path.stem} as _stock",
            "",
            f"_DATE = by_name({family!r}).date_pipeline()",
            "",
        ]
        for cls in members:
            lines += [
                "",
                f"class {PREFIX}{cls.name}(_stock.{cls.name}):",
                "    pipeline_class = _DATE",
                "",
                "    @pytest.fixture(autouse=True)",
                "    def _date_in_place_of_stock(self, monkeypatch):",
                f"        if hasattr(_stock, {stock!r}):",
                f"            monkeypatch.setattr(_stock, {stock!r}, _DATE)",
                "        monkeypatch.setattr(diffusers.pipelines, _DATE.__name__, _DATE, raising=False)",
                "",
            ]
        (path.parent / GENERATED.format(stem=path.stem)).write_text("\n".join(lines), encoding="utf-8")


def run_pytest(root: Path, nodeids: list[str], timeout: float, log: Path) -> tuple[dict, str]:
    """Run the node ids in one pytest process under `timeout` seconds: {nodeid: outcome}, and how it ended."""
    report = log.with_suffix(".jsonl")
    report.unlink(missing_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PEER_REPORT"] = str(report)
    env["PEER_CLASSES"] = json.dumps(nodeids)
    import date_diffusion

    src = str(Path(date_diffusion.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), src, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "pytest", "-p", "peer_report", "-p", "no:cacheprovider", "-q", "-rfE"]
    cmd += ["--continue-on-collection-errors"]  # a file the installed packages cannot import costs only its tests
    cmd += ["--rootdir", str(root), *sorted({n.partition("::")[0] for n in nodeids})]
    ended = "done"
    with open(log, "w") as out:
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            if proc.returncode not in (0, 1):  # 1: some tests failed; 2-5: interrupted, internal, usage, no tests
                ended = f"pytest exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            ended = f"timeout after {timeout:.0f}s"
    outcomes, broken = {}, []
    if report.exists():
        for line in report.read_text().splitlines():
            row = json.loads(line)
            if row["outcome"] == "collect-error":
                broken.append(f"{row['nodeid']} not importable ({row['message'].strip().splitlines()[-1][:200]})")
            else:
                outcomes[row["nodeid"]] = row["outcome"]
    return outcomes, "; ".join(broken + ([] if ended == "done" and broken else [ended]))


def _key(nodeid: str) -> str:
    """A test's name common to its stock and DATE run: file::class::test with the generated names undone."""
    file, _, rest = nodeid.partition("::")
    path = Path(file)
    match = re.fullmatch(re.escape(GENERATED).replace(re.escape("{stem}"), "(.+)"), path.name)
    if match:
        file = str(path.parent / f"{match.group(1)}.py")
    return f"{Path(file).parent.name}/{Path(file).name}::{rest.removeprefix(PREFIX)}"


def check_family(family, suite: Path, work: Path, timeout: float, all_classes: bool) -> Result:
    import diffusers

    result = Result(family.name, family.stock, family.date_class, "ok")
    if not hasattr(diffusers, family.stock):
        result.status, result.note = "no-stock", f"diffusers {diffusers.__version__} has no {family.stock}"
        return result
    try:
        family.date_pipeline()
    except (ImportError, AttributeError) as error:
        result.status, result.note = "no-date", f"{family.module}.{family.date_class}: {error}"
        return result
    classes = fast_test_classes(suite, family.stock, all_classes)
    result.classes = [c.nodeid for c in classes]
    if not classes:
        result.status, result.note = "no-tests", f"no fast test class sets pipeline_class = {family.stock}"
        return result
    write_subclasses(work, family.name, family.stock, classes)
    start = time.monotonic()
    logs = work / "logs"
    stock, stock_end = run_pytest(work, [c.nodeid for c in classes], timeout, logs / f"{family.name}-stock.log")
    ours, ours_end = run_pytest(work, [c.ours for c in classes], timeout, logs / f"{family.name}-ours.log")
    result.seconds = round(time.monotonic() - start, 1)
    stock = {_key(k): v for k, v in stock.items()}
    ours = {_key(k): v for k, v in ours.items()}
    both = sorted({*stock, *ours})
    result.outcomes = {k: {"stock": stock.get(k, "not run"), "ours": ours.get(k, "not run")} for k in both}
    result.stock_passed = sorted(k for k, v in stock.items() if v == "passed")
    result.ours_passed = sorted(k for k, v in ours.items() if v == "passed")
    result.misses = sorted(set(result.stock_passed) - set(result.ours_passed))
    result.gains = sorted(set(result.ours_passed) - set(result.stock_passed))
    problems = [f"{run}: {end}" for run, end in (("stock", stock_end), ("ours", ours_end)) if end != "done"]
    result.note = "; ".join(problems)
    if result.misses:
        result.status = "misses"
    elif any("timeout" in p for p in problems):
        result.status = "timeout"
    elif problems:
        result.status = "error"
    return result


def _counted(names) -> list[str]:
    """Each name once, with how many classes it stands for where more than one (SD 1 and 2 share test names)."""
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return [name if n == 1 else f"{name} (x{n})" for name, n in seen.items()]


def table(results: list[Result]) -> str:
    rows = [("family", "status", "stock passed", "ours passed", "ours misses", "ours only")]
    for r in results:
        counts = (str(len(r.stock_passed)), str(len(r.ours_passed))) if r.classes else ("-", "-")
        short = lambda names: ", ".join(_counted(n.split("::")[-1] for n in names)) or "-"
        rows.append((r.family, r.status, *counts, short(r.misses), short(r.gains)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    notes = [f"  {r.family}: {r.note}" for r in results if r.note]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python tests/peer/run.py")
    parser.add_argument("families", nargs="*", help="family names (default: every family)")
    parser.add_argument("--suite", help="diffusers' tests/ folder (default: shared/peer/diffusers/tests)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for each pytest run (default 1800)")
    parser.add_argument("--json", default="peer-summary.json", help="where the JSON summary goes")
    parser.add_argument("--all-classes", action="store_true", help="also the LoRA, cache, memory, IP-Adapter classes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy of the suite (and its logs)")
    args = parser.parse_args(argv)

    if not _importable("date_diffusion"):
        sys.path.insert(0, str(REPO / "src"))
    from date_diffusion import families as registry

    known = {f.name: f for f in registry.all_families()}
    unknown = [n for n in args.families if n not in known]
    if unknown:
        parser.error(f"unknown families {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[n] for n in args.families] if args.families else list(known.values())
    suite = find_suite(args.suite)

    work = Path(tempfile.mkdtemp(prefix="date-peer-"))
    try:
        shutil.copytree(suite, work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        with open(work / "tests" / "conftest.py", "a", encoding="utf-8") as conftest:
            conftest.write("\n\n" + STANDINS.read_text(encoding="utf-8"))
        (work / "peer_report.py").write_text(REPORT_PLUGIN, encoding="utf-8")
        (work / "logs").mkdir()
        results = []
        for family in chosen:
            print(f"[peer] {family.name} ...", file=sys.stderr, flush=True)
            results.append(check_family(family, suite, work, args.timeout, args.all_classes))
            print(table(results[-1:]).splitlines()[2], file=sys.stderr, flush=True)
        print(table(results))
        summary = {"suite": str(suite), "work": str(work) if args.keep else None}
        summary["families"] = [asdict(r) for r in results]
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        print(f"summary: {args.json}" + (f"; suite copy and logs: {work}" if args.keep else ""))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r.misses for r in results) else 0


def _importable(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
