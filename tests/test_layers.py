"""The layers as drawn: no import cycle among carrot's modules (deferred imports inside functions
count), no private name imported from another package, no module that shadows the standard
library, and no source file over 400 lines."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "carrot"
MAX_LINES = 400

# Violations that other branches are removing; the coordinator empties these after merging.
KNOWN_CYCLES: set[frozenset[str]] = set()
KNOWN_PRIVATE: set[tuple[str, str]] = set()
KNOWN_LONG: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in the file, wherever it is
    (module level, inside functions, under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(module, path)
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [alias.name for alias in node.names]
            # ``from carrot.pkg import module`` imports the module itself.
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
            out += [(s, []) for s in submodules]
            out.append((base, [n for n in names if f"{base}.{n}" not in known]))
    return [(m, names) for m, names in out if m == "carrot" or m.startswith("carrot.")]


def _graph() -> dict[str, set[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for target, _ in _imports(module, path, known):
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_ancestor(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_checker_finds_what_it_looks_for() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]
    known = _modules()
    assert "carrot.functional.geometry" in known and "carrot" in known
    path = known["carrot.functional.operator"]
    targets = {m for m, _ in _imports("carrot.functional.operator", path, known)}
    assert "carrot.functional.options" in targets


def test_no_import_cycle_among_modules() -> None:
    """Imports inside functions count: a cycle deferred to run time is still a cycle."""
    cycles = set(_cycles(_graph()))
    new = sorted(sorted(c) for c in cycles - KNOWN_CYCLES)
    assert not new, f"import cycles: {new}"
    assert not KNOWN_CYCLES - cycles, f"fixed, remove from KNOWN_CYCLES: {KNOWN_CYCLES - cycles}"


def test_no_private_name_crosses_a_package() -> None:
    """``_name`` (or a ``_module``) is private to its package: another package gets it public."""
    known = _modules()
    found: set[tuple[str, str]] = set()
    for module, path in known.items():
        package = _package_of(module, path)
        for target, names in _imports(module, path, known):
            if target in known:
                target_package = _package_of(target, known[target])
            else:
                target_package = target.rpartition(".")[0]
            private_module = any(p.startswith("_") and p != "__init__" for p in target.split("."))
            if _is_ancestor(target_package, module) or _is_ancestor(package, target):
                # The same package, or a package reaching into its own subpackage's __init__.
                if target_package == package:
                    continue
            privates = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private_module and target_package != package:
                found.add((module, target))
            found.update((module, f"{target}.{n}") for n in privates if target_package != package)
    new = sorted(found - KNOWN_PRIVATE)
    assert not new, f"private names imported across packages: {new}"
    assert not KNOWN_PRIVATE - found, f"fixed, remove from KNOWN_PRIVATE: {KNOWN_PRIVATE - found}"


def test_no_module_shadows_the_standard_library() -> None:
    """A script's folder comes first on ``sys.path``: a ``benchmarks/operator.py`` would replace
    the standard library's ``operator`` for every script beside it. Modules inside the package
    (``carrot.functional.operator``) are reached by their full name and shadow nothing."""
    roots = [SRC, *(SRC.parent / name for name in ("benchmarks", "examples", "scripts"))]
    names = {p.stem for root in roots if root.exists() for p in root.glob("*.py")}
    names |= {p.name for p in SRC.iterdir() if p.is_dir()}
    shadowing = sorted(names & set(sys.stdlib_module_names))
    assert not shadowing, f"modules named like the standard library's: {shadowing}"


def test_no_source_file_over_400_lines() -> None:
    long = {
        str(p.relative_to(SRC.parent))
        for p in [*PACKAGE.rglob("*.py"), *(SRC.parent / "benchmarks").rglob("*.py")]
        if len(p.read_text().splitlines()) > MAX_LINES
    }
    new = sorted(long - KNOWN_LONG)
    assert not new, f"files over {MAX_LINES} lines: {new}"
    assert not KNOWN_LONG - long, f"fixed, remove from KNOWN_LONG: {KNOWN_LONG - long}"
