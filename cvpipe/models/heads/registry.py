"""The head registry: each head's file registers one `HeadSpec` (its name, task, settings class, builder and what
it can do), and everything else asks the registry instead of comparing head names.

Every module in this package is imported on the first lookup, so a new head is one new file here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from cvpipe.registry import Registry

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
    # (head settings) → the side of the images it sees, in pixels: the default slice size of `tiling:`
    input_size: Callable[..., int] | None = None
    # device type → the backend `--backend auto` takes there (measured: benches/inference_speed.py); else pytorch
    auto_backend: dict[str, str] = field(default_factory=dict)
    # (model, state dict, WeightsEntry) → the tensors left fresh: how `model.weights` (a whole pretrained model)
    # loads; None: by cvpipe's own tensor names (heads.load_fitting), as converted detectors are stored
    load_whole: Callable[..., list[str]] | None = None
    # (model, pipeline config, class names, catalogue) → {class: pretrained label} whose output rows it copied from
    # the pretrained head (`model.head.reuse_classes`); None: the head cannot
    reuse_classes: Callable[..., dict[str, str]] | None = None

    @property
    def task(self) -> str:
        return self.settings.task


HEADS: Registry[HeadSpec] = Registry(__package__, "head", "model.head.name")


def register_head(spec: HeadSpec) -> HeadSpec:
    return HEADS.register(spec.name, spec)


def heads() -> dict[str, HeadSpec]:
    """Every registered head by name."""
    return HEADS.all()


def head_spec(name: str) -> HeadSpec:
    return HEADS.get(name)


def heads_for_task(task: str) -> list[str]:
    return sorted(name for name, spec in heads().items() if spec.task == task)


def task_problems(name: str, task: str) -> Problems:
    """A head does one task (its settings class says which)."""
    if head_spec(name).task == task:
        return []
    return [(("model", "head", "name"), f"head {name!r} does not do task {task!r}; use one of: "
             f"{', '.join(heads_for_task(task)) or '(none available yet)'}")]


NOT_EXPORTABLE = "it takes selective search proposals computed outside the network"


def needs_pyramid_or_none(model) -> Problems:
    """For heads on FeatureBody: SSD's extra blocks are SSD's."""
    if model.neck.name in ("ssd", "ssd_vgg"):
        return [(("model", "neck", "name"), f"{model.head.name} needs neck fpn, pan or none ({model.neck.name}'s "
                 "extra blocks are for ssd)")]
    return []
