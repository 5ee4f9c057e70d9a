"""The package's layering, read from its own imports (``ast``): imports point down only, no cycles.

Layers, bottom to top (``docs/conventions.md``, "Layout"):

    regnet._checks, regnet (the lazy top-level package)      leaves: import nothing from regnet
    regnet.ops                                               differentiable primitives, kernels
    regnet.geometry                                          coordinates, matrices, fields, resampling
    regnet.losses | regnet.metrics | regnet.io               siblings: never import each other
    regnet.registration                                      skeleton, affine, SyN, world, config
    regnet.pipeline | regnet.transforms                      adapters: never import each other
    regnet.lightning                                         may use transforms and pipeline
    regnet.demo, then regnet.cli, then regnet.__main__      entry points (the command line runs the demo)

Every ``import`` counts, also those inside functions (a lazy import is still a dependency).
Inside ``regnet.ops``, the Triton kernels never import the dispatcher ``regnet.ops._backend``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "regnet"

#: Top-level unit -> rank; an import may only go to a lower rank, or stay inside its own unit.
RANKS = {
    "regnet._checks": 0,
    "regnet._openmp": 0,
    "regnet": 0,
    "regnet.ops": 1,
    "regnet.geometry": 2,
    "regnet.losses": 3,
    "regnet.metrics": 3,
    "regnet.io": 3,
    "regnet.registration": 4,
    "regnet.pipeline": 5,
    "regnet.transforms": 5,
    "regnet.lightning": 6,
    "regnet.demo": 7,
    "regnet.cli": 8,
    "regnet.__main__": 9,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str:
    """The most specific regnet module (or package) that ``name`` names."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, path: Path) -> set[str]:
    """The regnet modules ``module`` imports (absolute and relative, at any depth)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from regnet import ops` names the module regnet.ops; `from regnet import __version__`
            # names the package regnet itself
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            if name == "regnet" or name.startswith("regnet."):
                target = _resolve(name)
                if target and target != module:
                    found.add(target)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _unit(module: str) -> str:
    """The top-level unit (a key of :data:`RANKS`) that ``module`` belongs to."""
    best = ""
    for unit in RANKS:
        if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
            best = unit
    if not best:
        raise AssertionError(f"{module} belongs to no layer: add it to RANKS in tests/test_layering.py")
    return best


def test_every_module_has_a_layer():
    for module in MODULES:
        _unit(module)


def test_imports_point_down_only():
    wrong = []
    for module, targets in GRAPH.items():
        unit = _unit(module)
        for target in targets:
            other = _unit(target)
            if other != unit and RANKS[other] >= RANKS[unit]:
                wrong.append(f"{module} (layer {RANKS[unit]}) imports {target} (layer {RANKS[other]})")
    assert not wrong, "imports that run upward or sideways:\n" + "\n".join(sorted(wrong))


def test_pipeline_and_transforms_never_import_each_other():
    for module, targets in GRAPH.items():
        for a, b in (("regnet.pipeline", "regnet.transforms"), ("regnet.transforms", "regnet.pipeline")):
            if _unit(module) == a:
                assert not any(_unit(t) == b for t in targets), f"{module} imports {b}"


def test_triton_kernels_never_import_the_dispatcher():
    for module, targets in GRAPH.items():
        if module.startswith("regnet.ops._triton"):
            assert "regnet.ops._backend" not in targets, f"{module} imports the dispatcher regnet.ops._backend"


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_the_reader_sees_imports():
    """The test can fail: it finds known edges (direct, from-, lazy and package imports)."""
    assert "regnet.ops._backend" in GRAPH["regnet.ops.warp"]
    assert "regnet.ops" in GRAPH["regnet.geometry.resampling"]
    assert "regnet._checks" in GRAPH["regnet.geometry.coordinates"]
    assert any(_unit(t) == "regnet.lightning" for t in GRAPH["regnet.cli.train"])  # inside a function
