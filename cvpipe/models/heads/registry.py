"""The head registry: each head's file registers one `HeadSpec` (its name, task, settings class, builder and what
it can do), and everything else asks the registry instead of comparing head names.

Every module in this package is imported on the first lookup, so a new head is one new file here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from cvpipe.errors import ConfigError

Problems = list[tuple[tuple, str]]  # (key path, message), as config problems are reported


@dataclass(frozen=True)
class HeadSpec:
    name: str
    settings: type  # the pydantic class of `model.head` (cvpipe.config); it names the head's task
    # (pipeline config, backbone, number of classes) → the whole model; necks come from `build_neck`
    build: Callable[..., nn.Module]
    neck_problems: Callable[..., Problems] = field(default=lambda model: [])  # (ModelConfig) → what does not fit
    exportable: bool = True  # traced to ONNX by `cvpipe export`
    compilable: bool = False  # `--backend compile`: has `inference_core()`
    tta_scales: bool = False  # takes test-time views at other input sizes
    uses_backbone: bool = True  # false: the head is its own network (fast style transfer)
    why_not_exportable: str = ""

    @property
    def task(self) -> str:
        return self.settings.task


HEADS: dict[str, HeadSpec] = {}


def register_head(spec: HeadSpec) -> HeadSpec:
    if spec.name in HEADS and HEADS[spec.name] is not spec:
        raise ValueError(f"head {spec.name!r} is registered twice")
    HEADS[spec.name] = spec
    return spec


_imported = False


def heads() -> dict[str, HeadSpec]:
    """Every registered head by name (importing every module of this package once)."""
    global _imported
    if not _imported:
        package = importlib.import_module(__package__)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{__package__}.{module.name}")
        _imported = True
    return HEADS


def head_spec(name: str) -> HeadSpec:
    spec = heads().get(name)
    if spec is None:
        raise ConfigError(f"model.head.name: no head {name!r} is registered; available: {', '.join(sorted(heads()))}")
    return spec


def heads_for_task(task: str) -> list[str]:
    return sorted(name for name, spec in heads().items() if spec.task == task)


NOT_EXPORTABLE = "it takes selective search proposals computed outside the network"


def needs_pyramid_or_none(model) -> Problems:
    """For heads on FeatureBody: SSD's extra blocks are SSD's."""
    if model.neck.name == "ssd":
        return [(("model", "neck", "name"), f"{model.head.name} needs neck fpn, pan or none (ssd's extra blocks are "
                 "for ssd)")]
    return []
