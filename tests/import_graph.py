"""The project's import graph, read statically from the source: imports at module level and inside
functions alike (a function-level import runs as surely as a top-level one once it is called)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    """The file of project module `name` (kagglecv.x.y), or None for anything outside the project."""
    if name != "kagglecv" and not name.startswith("kagglecv."):
        return None
    base = SRC / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions (`from a import b` may name a module a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def import_closure(path: Path) -> set[Path]:
    """`path` and every project file it imports, directly or not, package __init__ files included (those of
    `path`'s own packages too: `python -m kagglecv.stages.train` runs kagglecv/__init__.py and stages/__init__.py)."""
    packages = [folder / "__init__.py" for folder in path.parents if (folder / "__init__.py").exists() and SRC in folder.parents]
    todo, seen = [path, *packages], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imported_modules(current):
            parts = name.split(".")
            for k in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
                found = module_file(".".join(parts[:k]))
                if found is not None:
                    todo.append(found)
    return seen


def module_name(path: Path) -> str:
    """kagglecv.x.y for src/kagglecv/x/y.py (a package's __init__.py: the package)."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[Path]:
    """The project files `path` imports itself (not through others), package __init__ files left out."""
    found = set()
    for name in imported_modules(path):
        target = module_file(name)
        if target is not None and target.name != "__init__.py" and target != path:
            found.add(target)
    return found


def find_cycle(graph: dict[Path, set[Path]]) -> list[Path] | None:
    """One cycle of `graph` as [a, b, ..., a], or None if it has none."""
    state: dict[Path, int] = {}  # 1: on the current path, 2: done
    stack: list[Path] = []

    def visit(node: Path) -> list[Path] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None
