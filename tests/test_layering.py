"""The import graph of the package follows the layering of style.md: luts at the bottom,
then ops, then passes; the application only uses the public API; no import cycles.

The graph is built from the source with ``ast`` (imports inside functions included), mapping
file paths to module names with the package-dir mapping of ``pyproject.toml``. The package
root's lazily loaded names (``appmult_fx._LAZY``: export and the application's names, kept
for compatibility) are loaded by ``importlib`` on first access, not imported: no edges.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "appmult_fx"


def _package_dirs() -> dict[str, Path]:
    """Package name -> source folder, from ``[tool.setuptools.package-dir]``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    out = {}
    for package in config["packages"]:
        parent, _, leaf = package.rpartition(".")
        folder = mapping.get(package) or (Path(mapping.get(parent, parent)) / leaf).as_posix()
        out[package] = ROOT / folder
    return out


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package ``__init__``) for every Python file of the package."""
    out = {}
    for package, folder in _package_dirs().items():
        for path in folder.glob("*.py"):
            is_init = path.stem == "__init__"
            out[package if is_init else f"{package}.{path.stem}"] = (path, is_init)
    return out


def _resolve(module: str, is_init: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_init else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _bound_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level (imports, functions, classes, assignments)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
                names |= {k.value for k in node.value.keys}  # loaded by the root's __getattr__
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at any depth of its code, lazy included).

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module which ``pkg``'s
    ``__init__`` does not shadow with a name of its own (as Python resolves it), else to ``pkg``.
    """
    modules = _modules()
    trees = {m: ast.parse(path.read_text(), str(path)) for m, (path, _) in modules.items()}
    graph: dict[str, set[str]] = {}
    for module, (_, is_init) in modules.items():
        targets: set[str] = set()
        for node in ast.walk(trees[module]):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_init, node)
                shadowed = _bound_names(trees[base]) if base in modules else set()
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules and alias.name not in shadowed else base)
        graph[module] = {t for t in targets if t in modules and t != module}
    return graph


def unresolved_imports() -> list[str]:
    """``from <package module> import name`` where ``name`` is neither a module nor bound there."""
    modules = _modules()
    bad = []
    for module, (path, is_init) in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = _resolve(module, is_init, node)
            if base.split(".")[0] == PACKAGE and base not in modules:
                bad.append(f"{module}: from {base} import ... (no such module)")
                continue
            if base not in modules or not modules[base][1]:
                continue  # an outside module, or a plain module (its names are checked by ruff)
            bound = _bound_names(ast.parse(modules[base][0].read_text()))
            bad += [
                f"{module}: from {base} import {a.name}"
                for a in node.names
                if f"{base}.{a.name}" not in modules and a.name not in bound
            ]
    return bad


def test_package_imports_resolve() -> None:
    """Names imported from a package of ours exist there (catches imports a move broke,
    including lazy ones that only run in a rarely used path)."""
    assert not unresolved_imports()


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("luts", "ops", "passes", "app", "cli", "export"):
        return parts[1]
    return "core"


# What each layer may import besides itself ("api" = the package root, appmult_fx/__init__).
ALLOWED = {
    "luts": set(),
    "ops": {"luts"},
    "passes": {"ops", "luts"},
    "app": {"api"},
}


def test_layers_import_only_what_lies_below_them() -> None:
    bad = []
    for module, targets in sorted(import_graph().items()):
        layer = _layer(module)
        if layer not in ALLOWED:
            continue
        for target in sorted(targets):
            kind = "api" if target == PACKAGE else _layer(target)
            if kind != layer and kind not in ALLOWED[layer]:
                bad.append(f"{module} -> {target}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert not _cycles(graph), f"import cycles: {_cycles(graph)}"


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    """The harness itself: a lazy import inside a method and ``from . import x`` are edges;
    a name the package's ``__init__`` binds is an edge to the package (the public API)."""
    graph = import_graph()
    assert f"{PACKAGE}.luts.fp" in graph[f"{PACKAGE}.luts.formats"]  # inside load_multiplier()
    assert f"{PACKAGE}.passes.rewrite_fp" in graph[f"{PACKAGE}.passes.rewrite"]
    assert PACKAGE in graph[f"{PACKAGE}.app.workflow"]  # from appmult_fx import convert


@pytest.mark.parametrize("cycle", [["a", "b"]])
def test_cycle_finder_finds_a_planted_cycle(cycle: list[str]) -> None:
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": set()}
    assert _cycles(graph) == [cycle]


def test_import_loads_nothing_heavy_and_lazy_names_resolve() -> None:
    """``import appmult_fx`` loads no onnx/jsonschema/matplotlib/sklearn; the lazily exported
    names still resolve (``export`` to the function, not the subpackage)."""
    code = (
        "import sys, appmult_fx as amx\n"
        "heavy = ('onnx', 'onnxscript', 'onnxruntime', 'jsonschema', 'matplotlib', 'sklearn',"
        " 'optuna')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "import appmult_fx.export\n"
        "print(callable(amx.export) and amx.export.__module__, amx.fit.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "appmult_fx.export.api appmult_fx.app.train"
