"""The pipeline schema's open parts, assembled from the registries: `model.head` is the union of the registered
heads' settings (tagged by `name`), `task` a registered task's name, `eval.best` `auto` or a stat of a registered
task. So a new head is one file in cvpipe/models/heads/ and a new task one file in cvpipe/tasks/: config.py
names neither.

`pipeline_schema()` completes `PipelineConfig` (pydantic forward references, resolved by `model_rebuild`) for the
registries as they stand; everything that validates a pipeline asks for it first.
"""

from __future__ import annotations

import typing
from typing import Annotated, Literal, Union

from pydantic import Field

from cvpipe import config


def pipeline_schema() -> type[config.PipelineConfig]:
    """`PipelineConfig`, complete for the heads and tasks registered now (assembled again when they change: a
    head a user registers at run time is accepted from then on, and one taken away is refused again)."""
    from cvpipe.models.heads.registry import heads
    from cvpipe.tasks import tasks

    registered = (tuple(spec.settings for _, spec in sorted(heads().items())),
                  tuple((name, task.stats) for name, task in sorted(tasks().items())))
    if _assembled_for[0] != registered:  # the classes are rebuilt in place: remember for which registries
        _assemble(*registered)
        _assembled_for[0] = registered
    return config.PipelineConfig


_assembled_for: list[tuple | None] = [None]


def _assemble(settings: tuple[type[config.HeadSettings], ...], tasks: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    stats = tuple(dict.fromkeys(stat for _, task_stats in tasks for stat in task_stats))
    names = {
        "HeadConfig": Annotated[Union[settings], Field(discriminator="name")],  # noqa: UP007 (a tuple of classes)
        "TaskName": Literal[tuple(name for name, _ in tasks)],
        "BestStat": Literal[("auto", *stats)],
    }
    fields = ((config.ModelConfig, "head", "HeadConfig"), (config.PipelineConfig, "task", "TaskName"),
              (config.EvalConfig, "best", "BestStat"))
    for model, field, name in fields:  # a rebuild keeps annotations it resolved before: set them anew
        if model.__pydantic_complete__:
            annotation, metadata = names[name], ()
            if typing.get_origin(annotation) is Annotated:
                annotation, *metadata = typing.get_args(annotation)
            model.model_fields[field].annotation = annotation
            model.model_fields[field].discriminator = next((m.discriminator for m in metadata), None)
    for model in (config.ModelConfig, config.EvalConfig, config.PipelineConfig):
        model.model_rebuild(force=True, _types_namespace=names)


def head_settings() -> dict[str, type[config.HeadSettings]]:
    """head name → its settings class, by name."""
    from cvpipe.models.heads.registry import heads

    return {name: spec.settings for name, spec in sorted(heads().items())}
