"""The house rules, kept true by a test: the import graph runs one way, and modules stay small.

- `controller/` never imports `docker`, and reaches the docker backend only through the
  public face of `sandbox.backends.docker` (and only from the CLI's engine commands and the
  doctor); everything else asks `sandbox.backends` for a backend by config.
- The harness (the code that runs inside containers) imports no controller, docker or openai.
- No import circles among module-level imports; no `_private` names imported across modules.
- The controller's layers import downwards only: cli -> wiring -> loop -> outputs ->
  (figures, dashboard, paper, tracking) -> (coding, trial, report) -> (matrix, selection,
  data) -> attempts -> (store, ledger, llm) -> records -> sandbox.
- No module is much over 400 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("controller", "sandbox")
MAX_MODULE_LINES = 420
DOCKER_FACADE_USERS = {"controller.cli.sandbox", "controller.doctor"}
# Lower number = lower layer; a module may import only from its own layer or below.
LAYERS: dict[str, int] = {
    "controller.errors": 0,
    "controller.plan": 1,
    "controller.registry": 1,
    "controller.stats": 1,
    "controller.power": 1,
    "controller.tasks": 1,
    "controller.datasets": 1,
    "controller.runlog": 1,
    "controller.scheduler": 1,
    "controller.scoring": 1,
    "controller.store": 2,
    "controller.ledger": 2,
    "controller.llm": 2,
    "controller.agents": 3,
    "controller.attempts": 3,
    "controller.data": 4,
    "controller.selection": 4,
    "controller.research": 4,
    "controller.matrix": 4,
    "controller.trial": 5,
    "controller.sizing": 5,
    "controller.context": 5,
    "controller.coding": 5,
    "controller.report": 5,
    "controller.figures": 6,
    "controller.dashboard": 6,
    "controller.paper": 6,
    "controller.findings": 6,
    "controller.tracking": 6,
    "controller.outputs": 7,
    "controller.loop": 8,
    "controller.rerun": 9,
    "controller.ownership": 9,
    "controller.wiring": 9,
    "controller.doctor": 9,
    "controller.cli": 10,
}


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "tasks" in path.relative_to(ROOT).parts[1:2]:
                continue  # task folders hold container-side scripts, not host modules
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def _imports(path: Path, name: str, *, top_level_only: bool = False) -> Iterator[tuple[str, list[str]]]:
    """(imported module, imported names) for every import in the file."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*prefix, base] if base else prefix)
            yield base, [alias.name for alias in node.names]


def _layer(module: str) -> int | None:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


MODULES = dict(_modules())


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("controller")))
def test_the_controller_never_touches_docker_directly(name: str) -> None:
    for imported, _ in _imports(MODULES[name], name):
        assert imported != "docker" and not imported.startswith("docker."), f"{name} imports {imported}"
        if imported.startswith("sandbox.backends.docker"):
            assert name in DOCKER_FACADE_USERS, f"{name} reaches into the docker backend ({imported})"
            assert imported == "sandbox.backends.docker", f"{name} imports docker internals ({imported})"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("sandbox.harness")))
def test_the_harness_imports_nothing_from_the_host_side(name: str) -> None:
    for imported, _ in _imports(MODULES[name], name):
        root = imported.split(".")[0]
        assert root not in {"controller", "docker", "openai"}, f"{name} imports {imported}"
        if root == "sandbox":
            assert imported.startswith("sandbox.harness"), f"{name} imports host-side {imported}"


def test_no_private_names_are_imported_across_modules() -> None:
    offenders = [
        f"{name}: {imported}.{symbol}"
        for name, path in MODULES.items()
        for imported, symbols in _imports(path, name)
        for symbol in symbols
        if symbol.startswith("_") and not symbol.startswith("__") and imported.split(".")[0] in PACKAGES
    ]
    assert offenders == []


def test_there_are_no_import_circles() -> None:
    graph = {
        name: {imported for imported, _ in _imports(path, name, top_level_only=True) if imported in MODULES}
        for name, path in MODULES.items()
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        assert node not in visiting, f"import circle: {' -> '.join([*visiting[visiting.index(node) :], node])}"
        visiting.append(node)
        for nxt in sorted(graph[node]):
            if nxt != node and not node.startswith(nxt + "."):  # a package's own __init__ is not a circle
                visit(nxt)
        visiting.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)


def test_controller_layers_import_downwards_only() -> None:
    upward = []
    for name, path in MODULES.items():
        mine = _layer(name)
        if mine is None:
            continue
        for imported, _ in _imports(path, name):
            theirs = _layer(imported)
            if theirs is not None and theirs > mine:
                upward.append(f"{name} (layer {mine}) imports {imported} (layer {theirs})")
    assert upward == []


def test_every_controller_module_has_a_layer() -> None:
    unplaced = [n for n in MODULES if n.startswith("controller.") and _layer(n) is None and n != "controller.__main__"]
    assert unplaced == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines; split it by responsibility"
