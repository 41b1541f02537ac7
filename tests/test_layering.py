"""The package's layers, read from the source with ast (imports inside functions included).

`cvpipe.tasks` sits between two floors: the folders it imports from (ops, models, data, io, metrics, viz) lie below
it and never import it back; `cvpipe.engine` (the runners: fit, evaluate, predict, video, export) lies above it
and nothing below imports the engine. No two modules import each other, directly or round a loop.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cvpipe"


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = module_names()


def imported(name: str) -> set[str]:
    """The cvpipe modules `name` imports anywhere in its file; `from cvpipe.x import y` counts as cvpipe.x.y when y
    is a module, else as cvpipe.x. A package's own `__init__` is no edge for the modules inside it."""
    path = MODULES[name]
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1])
                base = f"{parent}.{node.module}" if node.module else parent
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
                break
    return found


GRAPH = {name: imported(name) for name in MODULES}


def folder(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_nothing_that_tasks_import_imports_tasks_back():
    tasks = {name for name in MODULES if in_package(name, "cvpipe.tasks")}
    below, todo = set(), [target for name in tasks for target in GRAPH[name]]
    while todo:  # everything tasks reach, at any depth
        name = todo.pop()
        if name not in below and name not in tasks:
            below.add(name)
            todo += GRAPH[name]
    floors = {folder(name) for name in below} - {"cvpipe"}  # the top package's own modules are judged one by one
    back = sorted(name for name in MODULES if name not in tasks and (folder(name) in floors or name in below)
                  and GRAPH[name] & tasks)
    assert not back, f"below cvpipe.tasks but importing it: {back}"
    assert "cvpipe.ops" in floors and "cvpipe.engine" not in floors  # the two rooms, on their own sides


def test_the_tools_below_tasks_never_import_the_runners():
    ops = [name for name in MODULES if in_package(name, "cvpipe.ops")]
    assert len(ops) >= 8
    assert not [(name, sorted(t for t in GRAPH[name] if in_package(t, "cvpipe.engine"))) for name in ops
                if any(in_package(t, "cvpipe.engine") for t in GRAPH[name])]


def test_no_import_cycles():
    sorter = graphlib.TopologicalSorter(GRAPH)
    try:
        sorter.prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_the_reader_sees_imports_inside_functions_and_relative_ones():
    assert "cvpipe.tasks" in GRAPH["cvpipe.loading"]  # `from cvpipe.tasks import get_task` inside a function
    assert "cvpipe.ops.inference" in GRAPH["cvpipe.ops.tta"]
