"""The package's layering (ARCHITECTURE.md): each folder imports only the folders below it, and
no two modules import each other, directly or round a circle, at module level or inside a
function (a function-level import hides a cycle from Python, not from this test)."""
import ast
import os

import pytest

PKG = os.path.join(os.path.dirname(__file__), "..", "python", "mosaicfit")
# top to bottom; sim sits beside diagnostics (it uses the fit's selection only through model/io)
LAYERS = {"cli": 6, "pipeline": 5, "diagnostics": 4, "sim": 4, "fit": 3, "model": 2, "io": 1,
          "config": 0, "units": 0, "": 0}


def _modules():
    out = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, PKG)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(["mosaicfit"] + rel)] = path
    return out


def _imports(name, path, modules):
    """The package modules `name` imports (anywhere in the file)."""
    is_pkg = path.endswith("__init__.py")
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[:len(base) - node.level + 1] if node.level > 1 else base
                target = ".".join(stem + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:             # `from .. import io` names a module
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules and m != name}


def _layer(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def test_graph_sees_the_package(graph):
    assert len(graph) > 60
    assert "mosaicfit.model.basis" in graph["mosaicfit.fit.order"]


def test_each_folder_imports_only_the_folders_below(graph):
    up = []
    for m, deps in graph.items():
        for d in deps:
            a, b = _layer(m), _layer(d)
            if a != b and LAYERS[b] >= LAYERS[a] and b != "":
                up.append(f"{m} -> {d}")
    assert not up, "imports that run up or sideways: " + ", ".join(sorted(up))


def test_no_import_cycle(graph):
    # the package's __init__ files re-export lazily (PEP 562 __getattr__): they are entry
    # points, not dependencies, so edges into a package's own namespace are not followed
    g = {m: {d for d in deps if not d.endswith(("mosaicfit",))} for m, deps in graph.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles: " + "; ".join(cycles)
