"""fastdiff's modules import each other without cycles.

Every module under fastdiff/ is parsed (never imported) and each import it can ever run becomes an
edge of one graph at module granularity: `import fastdiff.x`, `from fastdiff.x import y`, relative
imports, imports inside functions (lazy ones too) and `importlib.import_module("fastdiff.x")` with a
literal name. A package's __init__.py is the package itself; `from pkg import name` points at the
submodule pkg.name when there is one, else at pkg. The graph must be acyclic."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastdiff"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under the package directory `root`."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(tree: ast.AST, name: str, is_package: bool, top: str):
    """Every absolute module name the module `name` may import, as written (before resolution to
    an existing module): (target, line, names imported from it)."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno, tuple(a.name for a in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called == "import_module" and node.args[0].value.split(".")[0] == top:
                yield node.args[0].value, node.lineno, ()


def _existing(target: str, modules) -> str | None:
    """The module that importing `target` names: itself, else its nearest enclosing module."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}, over the package at `root`."""
    modules = module_names(root)
    graph = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        tree = ast.parse(path.read_text(), str(path))
        for target, line, names in _imported(tree, name, path.name == "__init__.py", root.name):
            if target.split(".")[0] != root.name:
                continue
            # `from pkg import sub` imports the submodule pkg.sub; `from pkg import attr`, pkg
            targets = [f"{target}.{n}" if f"{target}.{n}" in modules else target for n in names] or [target]
            for t in targets:
                t = _existing(t, modules)
                if t is not None and t != name:
                    edges.setdefault(t, line)
    return graph


def components(graph: dict[str, dict]) -> list[set]:
    """The strongly connected components of more than one module: each holds a cycle (Tarjan's
    algorithm, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def enter(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        return node, iter(sorted(graph.get(node, ())))

    for root in sorted(graph):
        if root in index:
            continue
        work = [enter(root)]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    work.append(enter(child))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while node not in component:
                    component.add(stack.pop())
                on_stack.difference_update(component)
                if len(component) > 1:
                    found.append(component)
    return found


def cycles(graph: dict[str, dict]) -> list[list[str]]:
    """One cycle (modules, each importing the next, the last the first) per strongly connected
    component."""
    return [_cycle_in(graph, component) for component in components(graph)]


def _cycle_in(graph, component: set) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component."""
    start = min(component)
    parents, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return path[::-1]
                if child in component and child not in parents:
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError("not a strongly connected component")  # pragma: no cover


def package_graph(graph: dict[str, dict], depth: int = 2) -> dict[str, dict[str, str]]:
    """The graph between subpackages: every module folded into its first `depth` name components
    (fastdiff.sampling.cli -> fastdiff.sampling; top-level modules stay themselves). Each edge
    keeps the first module-level import behind it."""
    def fold(name):
        return ".".join(name.split(".")[:depth])
    folded = {}
    for name, edges in sorted(graph.items()):
        out = folded.setdefault(fold(name), {})
        for target, line in sorted(edges.items()):
            if fold(target) != fold(name):
                out.setdefault(fold(target), f"{name} line {line} imports {target}")
    return folded


def report(graph: dict[str, dict]) -> str:
    """Every cycle of the graph, one line per import along it."""
    lines = []
    for component in components(graph):
        cycle = _cycle_in(graph, component)
        lines.append(f"cycle among {', '.join(sorted(component))}:")
        for a, b in zip(cycle, cycle[1:] + cycle[:1]):
            via = graph[a][b]
            lines.append(f"    {a} -> {b} ({via if isinstance(via, str) else f'line {via}'})")
    return "\n".join(lines)


def test_fastdiff_has_no_import_cycles():
    graph = import_graph(PACKAGE)
    assert len(graph) > 20 and "fastdiff.ops" in graph["fastdiff"]  # the walk found the package
    problems = report(graph)
    assert not problems, "import cycles among fastdiff's modules:\n" + problems


def test_fastdiff_subpackages_are_layered():
    """No subpackage imports one that imports it back, through any of their modules (sampling
    must not reach up into the built-in models or training, which build on it)."""
    graph = package_graph(import_graph(PACKAGE))
    problems = report(graph)
    assert not problems, "import cycles among fastdiff's subpackages:\n" + problems


def _package(tmp_path, files: dict[str, str]) -> Path:
    root = tmp_path / "fastdiff"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize("back", [
    "from fastdiff.a import x",                      # absolute
    "from .. import a",                              # relative, a module
    "def f():\n    from ..a import x",               # lazy, inside a function
    "import fastdiff.a",                             # plain import
    "import importlib\nM = importlib.import_module('fastdiff.a')",
    "from fastdiff import a as alias",
])
def test_detects_a_cycle(tmp_path, back):
    """fastdiff.a imports fastdiff.sub.b (through the package fastdiff.sub), b imports a back."""
    root = _package(tmp_path, {"a.py": "from .sub import b\n", "sub/__init__.py": "", "sub/b.py": back + "\n"})
    graph = import_graph(root)
    assert graph["fastdiff.a"] == {"fastdiff.sub.b": 1}
    assert cycles(graph) == [["fastdiff.a", "fastdiff.sub.b"]]
    assert "    fastdiff.sub.b -> fastdiff.a (line " in report(graph)


def test_packages_count_as_their_init(tmp_path):
    """A submodule importing a sibling through its package is no cycle; importing a name that the
    package's __init__ defines is one when the __init__ imports that submodule."""
    root = _package(tmp_path, {"p/__init__.py": "from . import m\nX = 1\n", "p/m.py": "from . import n\n",
                               "p/n.py": "import torch\n"})
    assert cycles(import_graph(root)) == []
    (root / "p" / "n.py").write_text("from . import X\n")
    assert cycles(import_graph(root)) == [["fastdiff.p", "fastdiff.p.m", "fastdiff.p.n"]]


def test_longer_cycles_and_outside_imports(tmp_path):
    root = _package(tmp_path, {"a.py": "import os\nimport torch.nn\nfrom . import b\n", "b.py": "from .c import f\n",
                               "c.py": "def f():\n    from fastdiff.a import g\n", "d.py": "from . import a\n"})
    graph = import_graph(root)
    assert graph["fastdiff.a"] == {"fastdiff.b": 3} and graph["fastdiff.d"] == {"fastdiff.a": 1}
    assert cycles(graph) == [["fastdiff.a", "fastdiff.b", "fastdiff.c"]]


def test_detects_a_cycle_between_subpackages(tmp_path):
    """Acyclic between modules, cyclic between the subpackages p and q."""
    root = _package(tmp_path, {"p/__init__.py": "", "p/a.py": "def f():\n    from ..q import b\n",
                               "p/c.py": "", "q/__init__.py": "", "q/b.py": "import fastdiff.p.c\n"})
    graph = import_graph(root)
    assert cycles(graph) == []
    folded = package_graph(graph)
    assert cycles(folded) == [["fastdiff.p", "fastdiff.q"]]
    assert report(folded).splitlines() == [
        "cycle among fastdiff.p, fastdiff.q:",
        "    fastdiff.p -> fastdiff.q (fastdiff.p.a line 2 imports fastdiff.q.b)",
        "    fastdiff.q -> fastdiff.p (fastdiff.q.b line 1 imports fastdiff.p.c)"]
