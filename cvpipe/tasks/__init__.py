"""Tasks, one module each (detect, instance, classify, segment, stylize), registered by name: `get_task(config.task)`.

Every module of this package is imported on the first lookup, so a new task is one new file here: the schema takes
its name and stats from this registry (cvpipe/schema.py).
"""

from __future__ import annotations

from cvpipe.errors import ConfigError
from cvpipe.registry import Registry
from cvpipe.tasks.base import Task

TASKS: Registry[Task] = Registry(__name__, "task", "task")


def register_task(task: Task) -> Task:
    return TASKS.register(task.name, task)


def tasks() -> dict[str, Task]:
    """Every registered task by name."""
    return TASKS.all()


def get_task(name: str) -> Task:
    return TASKS.get(name)


def check_made_for(what: str, made_for: str, task: str) -> None:
    """Something made for one task (an exported graph) serves only pipelines of that task."""
    if made_for != task:
        raise ConfigError(f"{what}: exported for task {made_for!r}, the pipeline's is {task!r}")
