"""The package's layers: the import graph between its folders (each top-level module or package under
src/date_diffusion is one node; the package's `__init__` is `<root>`), built with `ast` from every import statement,
those inside functions included. No circles, no arrow from a lower layer to a higher one, and no module of the
registries' layers imports the toy world (a plugin: it registers itself through `plugins.py`).

`LAYERS` is the one statement of the order; docs/architecture.md's layer table lists the same rows (checked)."""

from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "date_diffusion"

# Bottom-up; a module may import its own layer's and lower layers' modules only.
LAYERS = (
    ("core",),
    ("schemas", "outputs", "quiet", "version", "plugins"),
    ("families", "schedulers", "model_folder"),
    ("hub",),
    ("sampling",),
    ("editing",),
    ("rewards",),
    ("pipelines",),
    ("resolver",),
    ("toyworld",),
    ("evaluation",),
    ("bench",),
    ("perf",),
    ("grids",),
    ("ui",),
    ("cli", "<root>", "__main__"),
)
# Arrows the pipeline spine's rewrite (issue 35) removes, in files that rewrite owns: empty this set then.
PENDING: set[tuple[str, str]] = set()  # arrows known to point up while they are being moved (none)
# The registries a plugin registers into: none of them may import the toy world.
NO_TOYWORLD = ("resolver", "rewards", "hub", "families", "pipelines", "model_folder", "plugins")


def _node(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "date_diffusion":
        return None
    return parts[1] if len(parts) > 1 else "<root>"


def _module_of(path: Path) -> tuple[list[str], bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[-1] == "__init__"
    return (parts[:-1] if package else parts), package


def _targets(node, module: list[str], package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        here = module if package else module[:-1]
        base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
    if base == "date_diffusion":  # `from date_diffusion import quiet` imports the module quiet, else the root
        return [f"date_diffusion.{a.name}" if _is_module(a.name) else base for a in node.names]
    return [base]


def _is_module(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def import_graph() -> dict[tuple[str, str], set[str]]:
    """(from node, to node) -> the files (relative to the package) whose imports make that arrow."""
    arrows: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        module, package = _module_of(path)
        source = _node(".".join(module))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, module, package):
                    dest = _node(target)
                    if dest is not None and dest != source:
                        arrows[(source, dest)].add(str(path.relative_to(PACKAGE)))
    return arrows


def _layer() -> dict[str, int]:
    return {name: k for k, names in enumerate(LAYERS) for name in names}


def test_every_node_has_a_layer():
    nodes = {n for arrow in import_graph() for n in arrow} | {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert nodes - set(_layer()) == set(), "add these to LAYERS"


def test_no_arrow_points_up():
    layer = _layer()
    up = {
        arrow: sorted(files)
        for arrow, files in import_graph().items()
        if layer[arrow[1]] > layer[arrow[0]] and arrow not in PENDING
    }
    assert up == {}, "a lower layer imports a higher one"


def test_pending_arrows_still_exist():
    """An arrow that is gone leaves PENDING (so that the set only shrinks)."""
    assert PENDING - set(import_graph()) == set()


def test_no_circles_between_folders():
    graph = defaultdict(set)
    for a, b in import_graph():
        if (a, b) not in PENDING:
            graph[a].add(b)
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_registries_do_not_import_the_toy_world():
    importers = {a: sorted(files) for (a, b), files in import_graph().items() if b == "toyworld" and a in NO_TOYWORLD}
    assert importers == {}
    for name in ("resolver.py", "hub.py", "rewards/registry.py", "families.py", "model_folder.py"):
        text = (PACKAGE / name).read_text(encoding="utf-8")
        assert "toyworld" not in text and "world." not in text, name


def test_the_architecture_doc_states_the_layers():
    """docs/architecture.md's layer table has one row per layer, bottom-up, naming the layer's modules in order."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## Layers, from the bottom", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    stated = [tuple(re.findall(r"`([<>\w]+?)(?:/|\.py)?`", row)) for row in rows]
    assert stated == list(LAYERS)


def test_the_package_declares_its_own_plugins():
    """plugins.OWN (used where the installed metadata lacks them) is pyproject.toml's entry-point group."""
    from date_diffusion import plugins

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["entry-points"][plugins.GROUP] == plugins.OWN
