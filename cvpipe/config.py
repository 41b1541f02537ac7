"""The pipeline schema (pydantic): every section and key of a pipeline YAML, with bounds and defaults checks.

Its open parts (`model.head`: each head's settings, which live in the head's module; `task`; `eval.best`) are
filled from the head and task registries by `cvpipe/schema.py`, so this module names no head and no task.
Reading a file, `--set` overrides and FILE:LINE messages are `cvpipe/loading.py`; checks that need the libraries
(albumentations, timm, the heads' fit to the neck) run there too, so this module imports nothing of cvpipe's
models or data.
"""


from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
)

from cvpipe.paths import leaves_root

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")


DataFormat = Literal["coco", "voc", "yolo", "folders", "masks", "instance_masks", "images"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN threshold would pass every bound check


class DataConfig(Strict):
    format: DataFormat
    # null: no dataset (a ready pretrained model that only predicts). Relative: to the pipeline file's folder,
    # then to the data folder (cvpipe/paths.py). Only train, eval and augment preview need it to exist.
    root: Path | None
    train: str | None  # null: the pipeline has no such split (a ready pretrained detector that only predicts)
    val: str | None
    classes: list[str]
    # segment: the mask value of pixels no loss or metric counts (unlabelled, object borders)
    ignore_index: Annotated[int, Field(ge=0, le=255)] = 255


    @field_validator("train", "val")
    @classmethod
    def _inside_root(cls, split: str | None) -> str | None:
        """A split is read (and copied) inside data.root, never beside it."""
        if split is not None and leaves_root(split):
            raise ValueError(f"{json.dumps(split)}: a split is a folder inside data.root (no '..', no absolute path)")
        return split


class AugmentConfig(Strict):
    train: list[str | dict[str, dict[str, Any] | None]]
    eval: list[str | dict[str, dict[str, Any] | None]]
    min_visibility: Annotated[float, Field(ge=0.0, le=1.0)]
    min_area: Annotated[float, Field(ge=0.0)]


class BackboneConfig(Strict):
    name: str
    weights: str | None
    out_indices: list[Annotated[int, Field(ge=0, le=5)]]
    freeze: Annotated[int, Field(ge=0, le=5)]
    frozen_bn: bool = False
    # module names whose outputs are the feature levels, instead of out_indices (e.g. an expansion layer)
    feature_nodes: list[str] = []
    timm_args: dict[str, str | int | float | bool] = {}  # extra timm.create_model arguments: {pad_type: same}


class NeckConfig(Strict):
    # pan: FPN's top-down path + a bottom-up path (PANet, YOLO); ssd_vgg: the SSD paper's levels on VGG-16
    name: Literal["none", "fpn", "pan", "ssd", "ssd_vgg"]
    out_channels: Annotated[int, Field(ge=1)]
    # ssd: extra down-sampling blocks after the last backbone level, one output depth each
    extra_blocks: list[Annotated[int, Field(ge=2)]] = [512, 256, 256, 128]
    depthwise: bool = False  # ssd: depthwise-separable extra blocks (SSDLite / TF's MobileNet SSDs)
    # ssd: the extra blocks' stride-2 convolutions pad same (TF's: the right and bottom first) | symmetric
    # (torchvision's: one pixel each side)
    padding: Literal["same", "symmetric"] = "same"
    # fpn: coarser levels after the pyramid's, which the heads' anchors see but RoI pooling does not: none |
    # p6p7 (RetinaNet's P6 and P7, stride-2 3×3 convolutions from P5: RetinaNet v1, FCOS, DeepForest) |
    # p6p7_c5 (from the backbone's last level: RetinaNet v2) | pool (P5 max-pooled: torchvision's Faster/Mask R-CNN)
    extra_levels: Literal["none", "p6p7", "p6p7_c5", "pool"] = "none"
    norm: Literal["none", "batch"] = "none"  # fpn: BatchNorm after each of its convolutions (torchvision's v2 R-CNNs)


class HeadSettings(Strict):
    """The base of every head's settings class, which lives in the head's own module (cvpipe/models/heads/) and is
    registered with it; the schema's `model.head` is the union of the registered ones (cvpipe/schema.py)."""


    task: ClassVar[str]  # the task the head does
    name: str  # each head narrows it to its own Literal name, the union's discriminator


class ReusesClasses(HeadSettings):
    """A head whose output rows of the classes its pretrained weights also know can start from theirs
    (models/class_match.py): auto (where the weights carry a head that fits) | true (or an error) | false."""


    # auto | true (an error where it cannot) | false: start the rows of shared classes from the weights'
    reuse_classes: bool | Literal["auto"] = "auto"
    class_map: dict[str, str] = {}  # my class → the pretrained head's class it is, where the names differ


class ProposalsConfig(Strict):
    """Selective search (fast mode): Felzenszwalb segmentations at `scales` in each colour space, grouped."""


    max: Annotated[int, Field(gt=0)] = 2000  # proposals per image, best ranked first (~2,000 as published)
    scales: list[Annotated[int, Field(gt=0)]] = [50, 100]  # Felzenszwalb's k: larger gives larger regions
    # colour spaces the segmentation runs in (one strategy each per scale)
    colour_spaces: list[Literal["hsv", "lab", "rgb"]] = ["hsv", "lab"]
    sigma: Annotated[float, Field(ge=0.0)] = 0.8  # Gaussian smoothing before segmentation
    min_size: Annotated[int, Field(gt=0)] = 10  # proposals narrower or shorter than this (pixels) are dropped


class ModelConfig(Strict):
    # the whole model's weights (backbone, neck and head: a COCO-pretrained detector); overrides backbone.weights.
    # Head layers that do not fit this pipeline's classes start fresh.
    weights: str | None = None
    # every BatchNorm's epsilon (backbone, neck and head), where the weights were trained with another than the
    # layers' own (torchvision's v1 COCO detectors: 0.0, its SSDlite: 0.001); null: the layers' own
    bn_eps: Annotated[float, Field(ge=0)] | None = None
    backbone: BackboneConfig
    neck: NeckConfig
    head: HeadConfig  # noqa: F821 (the registered heads' settings, tagged by name: cvpipe/schema.py)


class TrainConfig(Strict):
    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0)]
    optimizer: Literal["sgd", "adamw"]
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: Annotated[float, Field(ge=0)]
    warmup_iters: Annotated[int, Field(ge=0)]
    backbone_lr_mult: Annotated[float, Field(ge=0)]
    # layer-wise learning-rate decay over the backbone (timm's param_groups_layer_decay): each block below the top
    # learns at this factor more slowly, times backbone_lr_mult; null: one rate for the whole backbone
    layer_decay: Annotated[float, Field(gt=0, le=1)] | None = None
    grad_clip: Annotated[float, Field(ge=0)]
    amp: bool
    channels_last: bool = True
    ema: bool
    workers: Annotated[int, Field(ge=0)] | Literal["auto"]
    seed: int
    device: str
    time_limit: Annotated[float, Field(gt=0)] | None = None
    unfreeze_epoch: Annotated[int, Field(ge=0)] | None = None
    patience: Annotated[int, Field(ge=1)] | None = None  # stop after this many epochs without a better eval.best


BACKENDS = ("auto", "pytorch", "compile", "onnxruntime", "openvino")  # inference backends (engine/runtime.py)


def loader_workers(setting: int | str) -> int:
    """`train.workers: auto` leaves two cores to the model: 0 on a 2-core machine (measured: two workers there
    made training epochs about 1.5× slower), up to 8 on big ones."""
    import os


    if setting != "auto":
        return int(setting)
    return min(8, max(0, (os.cpu_count() or 1) - 2))


class EvalConfig(Strict):
    batch_size: Annotated[int, Field(ge=1)] | None = None  # None: per device and task (tasks/base.py)
    interval: Annotated[int, Field(ge=1)] = 1
    best: BestStat = "auto"  # noqa: F821 (auto, or a stat of a registered task: cvpipe/schema.py)
    coco: Literal["faster", "pycocotools"] = "faster"  # COCO box and mask mAP by faster-coco-eval, or the pycocotools reference
    # detection analysis (metrics/detection_analysis.py): the IoU of the confusion matrix, the best-F1 threshold and
    # the per-class precision / recall / F1; the confidence of the matrix and the table (auto: the best-F1 one)
    iou: Annotated[float, Field(gt=0, lt=1)] = 0.5
    conf: float | str = "auto"
    # custom area ranges (name: [min, max] in px²) evaluated beside COCO's small / medium / large
    area_ranges: dict[str, tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(gt=0)]]] = {}


    @field_validator("conf", mode="before")
    @classmethod
    def _conf(cls, value: Any) -> float | str:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"expected auto (the best-F1 confidence) or a number in [0, 1], got {value!r}")
        return float(value)


    @field_validator("area_ranges")
    @classmethod
    def _ranges(cls, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in ranges.items():
            if name in ("all", "small", "medium", "large"):
                raise ValueError(f"{name!r} is one of COCO's own ranges (all, small, medium, large); name it otherwise")
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise ValueError(f"{name!r}: a range name is letters, digits and _ (it becomes the stat AP_{name})")
            if low >= high:
                raise ValueError(f"{name}: [{low}, {high}] must be [min, max] with min < max (px², e.g. tiny: [0, 256])")
        return ranges


class OutputConfig(Strict):
    dir: Path
    save_images: bool


class TTAConfig(Strict):
    """Test-time augmentation for detection in `cvpipe eval` and `cvpipe predict` (ops/tta.py); training's
    own evaluations stay plain."""


    enabled: bool = False
    flips: Literal["none", "hflip", "dihedral"] = "hflip"  # dihedral: the 8 mirrors and quarter turns
    scales: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = [1.0]  # × the head's input size
    fusion: Literal["wbf", "nms"] = "wbf"  # weighted boxes fusion (ensemble-boxes) or NMS over all views
    # boxes overlapping this much are one object; None: the head's nms_thresh (a lower one would merge boxes the
    # head's own NMS kept apart: YOLO's 0.6 with 0.55 here lost 0.05 AP50 on tree crowns)
    iou: Annotated[float, Field(gt=0, le=1)] | None = None


class TilingConfig(Strict):
    """Large images in slices (ops/slicing.py): `predict` and `eval` run overlapping slices in batches, map the
    boxes back and merge them across the seams; training cuts random windows from images larger than a slice."""


    # auto: slice the images whose longer side is more than `auto_above` slices long; always; never
    mode: Literal["auto", "always", "never"] = "auto"
    size: Annotated[int, Field(ge=32)] | None = None  # slice side in pixels; None: the head's input size
    window: Annotated[int, Field(ge=32)] | None = None  # training windows' side in pixels; None: size
    overlap: Annotated[float, Field(ge=0.0, lt=0.9)] = 0.2  # share of a slice its neighbour also covers
    auto_above: Annotated[float, Field(ge=1.0)] = 4.0
    batch: Annotated[int, Field(ge=1)] | None = None  # slices per forward pass; None: the task's CPU batch (1 for detectors), 16 on a GPU
    # nmm: non-maximum merging (a box absorbs those it overlaps; instance masks: their union); wbf: boxes only;
    # None: the task's (detection nms, instance segmentation nmm)
    merge: Literal["nms", "nmm", "wbf"] | None = None
    # ios (intersection over the smaller box) also merges a box a seam cut with the whole one; iou: classic
    match: Literal["ios", "iou"] = "ios"
    iou: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5  # boxes of one class matching this much are one object
    min_visible: Annotated[float, Field(ge=0.0, le=1.0)] = 0.4  # training windows: a cut box keeps this share or goes
    empty_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1  # training windows without objects kept (others redrawn)


class ExportConfig(Strict):
    """`cvpipe export`: every export is re-scored on the val split and refused when it loses more than
    `tolerance` of the task's check stat (engine/export.py)."""


    tolerance: Annotated[float, Field(ge=0, le=1)] = 0.01
    calibration_images: Annotated[int, Field(ge=1)] = 64


Point = tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]]  # (x, y): pixels, or fractions of the frame


class VideoConfig(Strict):
    """`cvpipe video`: tracking, counting, and how long a dropped live stream is retried."""


    track: bool = False
    track_buffer: Annotated[int, Field(ge=1)] = 30  # frames a lost track is remembered
    track_match: Annotated[float, Field(gt=0, le=1)] = 0.8  # ByteTrack's minimum matching threshold
    reconnect_timeout: Annotated[float, Field(gt=0)] = 30.0  # seconds without a frame before a live run ends
    # counting (ops/counting.py), on tracked objects: name → the line's two ends / the zone's polygon; in
    # pixels, or as fractions of the frame's width and height when every coordinate of that line or zone is ≤ 1
    lines: dict[str, Annotated[list[Point], Field(min_length=2, max_length=2)]] = {}
    zones: dict[str, Annotated[list[Point], Field(min_length=3)]] = {}


    @field_validator("lines")
    @classmethod
    def _two_ends(cls, lines: dict) -> dict:
        for name, (start, end) in lines.items():
            if start == end:
                raise ValueError(f"{name}: its two ends are the same point {list(start)}; a line needs two points")
        return lines


    @property
    def counts(self) -> bool:
        return bool(self.lines or self.zones)


class PipelineConfig(Strict):
    name: str  # the run folder under output.dir
    task: TaskName  # noqa: F821 (a registered task's name: cvpipe/schema.py)
    data: DataConfig
    augment: AugmentConfig
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    output: OutputConfig
    video: VideoConfig = VideoConfig()
    tta: TTAConfig = TTAConfig()
    tiling: TilingConfig = TilingConfig()
    export: ExportConfig = ExportConfig()
    # where it came from, for FILE:LINE messages about problems found after loading (require_data)
    _source: str = PrivateAttr(default="pipeline")
    _lines: dict = PrivateAttr(default_factory=dict)
    _overridden: set = PrivateAttr(default_factory=set)
    _looked_in: dict = PrivateAttr(default_factory=dict)  # key path → the places a relative input was looked for

    def plain(self) -> PipelineConfig:
        """This pipeline without its test-time views: one view, as video, exports and their checks run it."""
        return self.model_copy(update={"tta": self.tta.model_copy(update={"enabled": False})})


    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        """A shared pipeline YAML must not be able to put its run folder outside output.dir."""
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise ValueError(f"{json.dumps(name)} names the run folder under output.dir: use letters, digits, "
                             "'_', '-' and '.' (no '/', no leading '.')")
        return name


    @property
    def source(self) -> str:
        """The pipeline file this was loaded from (a bundled one's path inside the package)."""
        return self._source


def models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_in(arg)]


def backbone_levels(backbone: BackboneConfig) -> int:
    return len(backbone.feature_nodes) or len(backbone.out_indices)


def pyramid_levels(model) -> int:
    """The feature levels a fpn / pan / none neck hands to the head (ModelConfig): the backbone's, plus P6 and P7."""
    if model.neck.name not in ("fpn", "pan"):
        return 1
    return backbone_levels(model.backbone) + {"none": 0, "pool": 1}.get(model.neck.extra_levels, 2)


def get_key(config: BaseModel, key: tuple[str, ...]) -> Any:
    """The value at a key path, e.g. ("eval", "batch_size")."""
    for name in key:
        config = getattr(config, name)
    return config


def set_key(config: BaseModel, key: tuple[str, ...], value: Any) -> None:
    *parents, name = key
    setattr(get_key(config, tuple(parents)), name, value)
