"""The import graph of python/customml has no cycle (issue #14), counting every import
statement wherever it stands: at module level, inside functions and methods, under ``if``
or ``try``. A cycle that runs only through function-level imports still ties the modules
together (neither can be understood, tested or moved without the other), and it is one
edit away from an ImportError at start-up.

The graph is read from the source with ``ast`` (nothing is imported): an edge A -> B for
each ``import customml.B``, ``from customml import B``, ``from customml.B import x``,
``from . import B``, ``from .B import x`` (any level of relative import) in A. ``from P
import name`` points at the submodule P.name when that is a module of the package, else
at P itself; ``import customml`` points at the package's ``__init__``. Importing a
submodule also initializes its parent package, an edge Python adds implicitly and that
every submodule shares; it is not counted (with it, every module would sit in a cycle
through ``__init__``).
"""

from __future__ import annotations

import ast
import pathlib
from typing import Dict, List, Optional, Set

import pytest

PACKAGE = "customml"
ROOT = pathlib.Path(__file__).resolve().parent.parent / "python" / PACKAGE


def _name(root: pathlib.Path, path: pathlib.Path) -> str:
    parts = (PACKAGE,) + path.relative_to(root).parts[:-1] + (path.name.split(".")[0],)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(root: pathlib.Path) -> Dict[str, pathlib.Path]:
    """Dotted name -> source file of every Python module of the package (``__init__``
    files name their package)."""
    return {_name(root, path): path for path in sorted(root.rglob("*.py"))}


def _extensions(root: pathlib.Path) -> Set[str]:
    """The compiled modules (``_core``: its stub or its shared library): leaves of the graph."""
    return {_name(root, path) for pattern in ("*.pyi", "*.so", "*.pyd") for path in root.rglob(pattern)}


def _resolve(module: str, is_package: bool, level: int, target: Optional[str]) -> str:
    """The absolute name a (possibly relative) ``from`` import in ``module`` refers to."""
    if level == 0:
        return target or ""
    base = module.split(".")
    # A package's own __init__ counts its package as level 1; a module, its parent.
    base = base if is_package else base[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph(root: pathlib.Path = ROOT) -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports (anywhere in its source)."""
    modules = _modules(root)
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    graph.update({name: set() for name in _extensions(root) if name not in modules})

    def add(src: str, name: str) -> None:
        # The longest prefix of the name that is one of the package's modules: an
        # import of customml.prune.magnitude (an attribute) is an edge to customml.prune.
        while name and name not in graph:
            name = name.rpartition(".")[0]
        if name and name != src:
            graph[src].add(name)

    for src, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        add(src, alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(src, is_package, node.level, node.module)
                if base != PACKAGE and not base.startswith(PACKAGE + "."):
                    continue
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    add(src, submodule if submodule in graph else base)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle of the graph as [a, b, ..., a], or None when it is acyclic (a depth-first
    search: an edge back to a module still on the stack closes a cycle)."""
    state: Dict[str, int] = {}  # 1: on the stack, 2: done
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    # The graph is the package's: a sanity check that the walk found its modules and edges.
    assert {"customml", "customml.models", "customml.io", "customml.prune"} <= set(graph)
    assert "customml.models" in graph["customml"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _write(root: pathlib.Path, files: Dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        path = root / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / PACKAGE


@pytest.mark.parametrize(
    "files, cycle",
    [
        # the shape of the cycles this test was written against: function-level imports only
        (
            {
                "__init__.py": "",
                "a.py": "def f():\n    from .b import g\n",
                "b.py": "class C:\n    def m(self):\n        from . import a\n",
            },
            ["customml.a", "customml.b", "customml.a"],
        ),
        # absolute imports, an attribute import and a module reached through the package
        (
            {
                "__init__.py": "",
                "a.py": "import customml.b\n",
                "b.py": "from customml.c import thing\n",
                "c.py": "if True:\n    from customml import a\n",
            },
            ["customml.a", "customml.b", "customml.c", "customml.a"],
        ),
        # through the package's __init__ (import customml) and a subpackage (two levels up)
        (
            {
                "__init__.py": "from .a import x\n",
                "a.py": "",
                "sub/__init__.py": "",
                "sub/m.py": "from .. import a\n",
                "b.py": "try:\n    import customml as cm\nexcept ImportError:\n    pass\n",
            },
            None,
        ),
        (
            {
                "__init__.py": "from .sub.m import x\n",
                "a.py": "",
                "sub/__init__.py": "",
                "sub/m.py": "def f():\n    import customml\n",
            },
            ["customml", "customml.sub.m", "customml"],
        ),
    ],
)
def test_the_cycle_check_sees_every_kind_of_import(tmp_path, files, cycle):
    assert find_cycle(import_graph(_write(tmp_path, files))) == cycle


def test_the_implicit_parent_package_import_is_not_an_edge_and_the_extension_is_a_leaf(tmp_path):
    graph = import_graph(
        _write(
            tmp_path,
            {
                "__init__.py": "from . import _core, a\n",
                "a.py": "from .b import y\n",
                "b.py": "from . import _core\ny = 1\n",
                "_core.pyi": "",
            },
        )
    )
    assert graph == {
        "customml": {"customml._core", "customml.a"},
        "customml.a": {"customml.b"},
        "customml.b": {"customml._core"},
        "customml._core": set(),
    }
