"""Imports point one way, tools -> hrp_data -> shadow -> adapters, with no circles.

The graph is read from the source with `ast` (every import counts: module level,
inside functions, under TYPE_CHECKING), so it needs no database and no other checkout.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tools", "hrp_data", "shadow", "adapters")
FORBIDDEN = {
    "adapters": {"shadow", "hrp_data", "tools"},
    "shadow": {"hrp_data", "tools"},
    "hrp_data": {"tools"},
}
"""package -> the packages it must never import."""


def modules_of(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages under root."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported_names(module: str, path: Path, tree: ast.AST) -> set[str]:
    names: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (an import of a name counts as one of its module)."""
    modules = modules_of(root, packages)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = {resolve(name) for name in _imported_names(module, path, tree)}
        # a module's own enclosing packages are imported before it anyway: not an arrow
        graph[module] = {t for t in targets if t and t != module and not module.startswith(t + ".")}
    return graph


def circles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return found


def wrong_way(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Every arrow into a package its package must not import."""
    return sorted(
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if target.split(".")[0] in FORBIDDEN.get(source.split(".")[0], ())
    )


# -- the project ----------------------------------------------------------------------


def test_the_project_imports_point_one_way():
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 50 and "hrp_data.cutover.dual_write" in graph
    assert wrong_way(graph) == []


def test_the_project_has_no_import_circles():
    assert circles(import_graph(ROOT, PACKAGES)) == []


# -- the checker itself ---------------------------------------------------------------


def test_a_planted_circle_and_wrong_way_arrows_are_found():
    graph = {
        "hrp_data.a": {"hrp_data.b", "shadow.x"},
        "hrp_data.b": {"hrp_data.c"},
        "hrp_data.c": {"hrp_data.a", "tools.cli"},
        "shadow.x": {"adapters.y", "hrp_data.b"},
        "adapters.y": {"adapters.z"},
        "adapters.z": {"adapters.y"},
        "tools.cli": {"hrp_data.a"},
    }
    assert sorted(circles(graph)) == [["adapters.y", "adapters.z"], ["hrp_data.a", "hrp_data.b", "hrp_data.c", "shadow.x", "tools.cli"]]
    assert wrong_way(graph) == ["hrp_data.c -> tools.cli", "shadow.x -> hrp_data.b"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_every_kind_of_import(tmp_path):
    files = {
        "hrp_data/__init__.py": "",
        "hrp_data/core.py": "from shadow import helper\n",
        "hrp_data/web/__init__.py": "from hrp_data.web.views import page\n",
        "hrp_data/web/views.py": (
            "from typing import TYPE_CHECKING\n"
            "from . import forms\n"
            "if TYPE_CHECKING:\n    from hrp_data.core import Thing\n"
            "def page():\n    import tools.cli\n"
        ),
        "hrp_data/web/forms.py": "from ..core import Thing\n",
        "shadow/__init__.py": "",
        "shadow/helper.py": "import hrp_data.web.views as views\n",
        "tools/__init__.py": "",
        "tools/cli.py": "from hrp_data import core\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, ["tools", "hrp_data", "shadow"])
    assert graph["hrp_data.web.views"] == {"hrp_data.web.forms", "hrp_data.core", "tools.cli"}
    assert graph["hrp_data.web.forms"] == {"hrp_data.core"}
    assert graph["hrp_data.web"] == {"hrp_data.web.views"}
    assert graph["tools.cli"] == {"hrp_data", "hrp_data.core"}  # the package's __init__ runs first
    assert graph["hrp_data.core"] == {"shadow", "shadow.helper"}
    assert wrong_way(graph) == ["hrp_data.web.views -> tools.cli", "shadow.helper -> hrp_data.web.views"]
    assert circles(graph) == [["hrp_data.core", "hrp_data.web.forms", "hrp_data.web.views", "shadow.helper", "tools.cli"]]
