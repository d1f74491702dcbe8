"""The package's import graph, read from the source with `ast` (imports inside
functions included, relative imports resolved): no import cycle between
modules, and no module imports from a layer above its own (the layers of
pyproject.toml's import-linter contract, which counts function-level imports
too, but not cycles inside one layer)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dtvg_dist"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The package modules `name` imports anywhere in its file -> the first line.
    `from a.b import c` is a.b.c when that is a module, else a.b."""
    is_package = path.name == "__init__.py"
    out: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        while target and target not in modules:  # a name inside a module: the module
            target = target.rpartition(".")[0]
        if target and target != name:
            out.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level-1 more
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            if not origin.startswith("dtvg_dist"):
                continue
            for alias in node.names:
                add(f"{origin}.{alias.name}", node.lineno)
    return out


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def _contract_layers() -> list[str]:
    """The layers contract's layers, top first ("a | b": independent siblings,
    "a : b": siblings that may import each other; import-linter's notation)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    assert "ignore_imports" not in contract, "the layers contract exempts imports"
    return list(contract["layers"])


def _layers() -> list[list[str]]:
    return [[m.strip() for m in layer.replace(":", "|").split("|")] for layer in _contract_layers()]


def _layer_of(module: str, layers: list[list[str]]) -> int | None:
    for i, layer in enumerate(layers):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return i
    return None


def test_the_reader_sees_function_level_and_relative_imports(tmp_path):
    """The parser itself: an import inside a function and a relative one are edges."""
    modules = {"dtvg_dist.a": tmp_path / "a.py", "dtvg_dist.b": tmp_path / "b.py",
               "dtvg_dist.c": tmp_path / "c.py"}
    source = tmp_path / "a.py"
    source.write_text("def f():\n    from dtvg_dist.b import thing\n\nfrom .c import other\n")
    assert _imports("dtvg_dist.a", source, modules) == {"dtvg_dist.b": 2, "dtvg_dist.c": 4}
    assert _cycle({"x": {"y": 1}, "y": {"z": 1}, "z": {"x": 1}}) == ["x", "y", "z", "x"]
    assert _cycle({"x": {"y": 1}, "y": {}}) is None


def test_no_import_cycle_counting_function_level_imports():
    graph = _graph()
    assert len(graph) > 50 and any(graph.values())
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)
    ) + f" -> {cycle[-1]}"


def test_no_module_imports_from_a_layer_above_its_own():
    layers, raw = _layers(), _contract_layers()
    upward = []
    for importer, targets in _graph().items():
        mine = _layer_of(importer, layers)
        for imported, line in targets.items():
            theirs = _layer_of(imported, layers)
            if mine is None or theirs is None:
                continue
            # Independent siblings ("|") import nothing from each other.
            same_top = importer.split(".")[:2] == imported.split(".")[:2]
            if theirs < mine or (theirs == mine and not same_top and "|" in raw[mine]):
                upward.append(f"{importer}:{line} imports {imported}")
    assert not upward, "\n".join(upward)


def test_every_module_has_a_layer():
    layers = _layers()
    loose = [m for m in _modules() if m != "dtvg_dist" and _layer_of(m, layers) is None]
    assert not loose, f"modules in no layer of the contract: {loose}"
