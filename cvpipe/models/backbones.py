"""Backbone factory: a timm feature extractor with pretrained weights from the catalogue, stages frozen."""

from __future__ import annotations

import timm
import torch
from timm.layers import freeze_batch_norm_2d
from timm.models import FeatureHookNet
from timm.utils.model import freeze as timm_freeze
from timm.utils.model import unfreeze as timm_unfreeze
from torch import nn

from cvpipe.config import BackboneConfig
from cvpipe.errors import ConfigError, WeightsError
from cvpipe.models import timm_variants  # noqa: F401 (registers backbones timm lacks, by name)
from cvpipe.models.weights import (
    IMAGENET,
    Preprocess,
    WeightsCatalog,
    WeightsEntry,
    learnt_tensors,
    load_into,
)
from cvpipe.suggest import did_you_mean


class Backbone(nn.Module):
    """`forward(images) -> [feature maps]`, one per `out_indices` level, with their channels and strides."""

    def __init__(self, body: nn.Module, preprocess: Preprocess, timm_name: str = "", timm_args: dict | None = None):
        super().__init__()
        self.body = body
        self.timm_name, self.timm_args = timm_name, dict(timm_args or {})  # the timm model the body is cut from
        self.out_channels: list[int] = list(body.feature_info.channels())
        self.strides: list[int] = list(body.feature_info.reduction())
        self.preprocess = preprocess

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)

    def layer_groups(self, decay: float, weight_decay: float) -> list[dict] | None:
        """timm's `param_groups_layer_decay` over the body: each block's learning-rate scale is `decay` to the
        power of its depth below the top (BEiT / MAE fine-tuning's layer-wise decay), as `lr_scale`. None where
        the timm model declares no `group_matcher`."""
        from timm.optim import param_groups_layer_decay

        with torch.device("meta"):  # only its grouping rules are needed, not its weights
            whole = timm.create_model(self.timm_name, pretrained=False, **self.timm_args)
        if not hasattr(whole, "group_matcher"):
            return None
        matcher = whole.group_matcher(coarse=False)
        body = self.body
        body.group_matcher = lambda coarse=False: matcher  # the cut-out body keeps the whole model's names
        try:
            return param_groups_layer_decay(body, weight_decay=weight_decay, layer_decay=decay)
        finally:
            del body.group_matcher


def build_backbone(cfg: BackboneConfig, *, catalog: WeightsCatalog | None = None) -> Backbone:
    if not timm.is_model(cfg.name):
        raise ConfigError(f"model.backbone.name: unknown timm model {cfg.name!r}{did_you_mean(cfg.name, timm.list_models())}")
    entry = None
    if cfg.weights:
        catalog = catalog or WeightsCatalog.load()
        entry = catalog.get(cfg.weights)
        if entry.backbone and entry.backbone != cfg.name:
            raise ConfigError(
                f"model.backbone.weights: {cfg.weights} is for backbone {entry.backbone!r}, not {cfg.name!r}; "
                f"set model.backbone.name: {entry.backbone}"
            )
        if entry.reference and not entry.backbone:
            raise ConfigError(f"model.backbone.weights: {cfg.weights} ({entry.arch}) has no timm backbone cvpipe can "
                              "load its trunk into; use it as model.weights with its head, or choose timm weights")
    # timm's own weights load through timm (its checkpoint filters), from the file the owner's cache holds
    pretrained = {} if entry is None or entry.format != "timm" else {
        "pretrained": True, "pretrained_cfg_overlay": {"file": str(catalog.fetch(cfg.weights))}}
    name = cfg.name
    if pretrained:  # timm reads the tag's config (`resnet50.a1_in1k`) or the hub repo's (`hf-hub:REPO`)
        name = cfg.weights.removeprefix("timm:")
    try:
        if cfg.feature_nodes:
            model = timm.create_model(name, num_classes=0, **pretrained, **cfg.timm_args)
        else:
            model = timm.create_model(name, features_only=True, out_indices=tuple(cfg.out_indices), **pretrained,
                                      **cfg.timm_args)
    except (IndexError, AssertionError, ValueError) as e:
        raise ConfigError(f"model.backbone.out_indices: {cfg.out_indices} does not fit {cfg.name} ({e})") from None
    except TypeError as e:
        raise ConfigError(f"model.backbone.timm_args: {cfg.timm_args} not accepted by {cfg.name} ({e})") from None
    except RuntimeError as e:  # timm could not load the file into the model
        raise WeightsError(f"model.backbone.weights: {cfg.weights} does not load into {cfg.name} ({e})") from None
    preprocess = IMAGENET
    if entry is not None:
        if not pretrained:
            load_trunk(model, catalog.state_dict(cfg.weights), entry, cfg)
        preprocess = entry.preprocess
    # Freezing swaps BatchNorm modules for frozen ones, so it comes before hooks are put on modules.
    freeze_stages(model, cfg.freeze)
    if cfg.frozen_bn:  # batch statistics of a few images per step are noise; keep the pretrained ones
        model = freeze_batch_norm_2d(model)
    body = hooked_features(model, cfg.feature_nodes) if cfg.feature_nodes else model
    return Backbone(body, preprocess, cfg.name, cfg.timm_args)


def load_trunk(model: nn.Module, state: dict[str, torch.Tensor], entry: WeightsEntry, cfg: BackboneConfig) -> None:
    """Catalogue and torchvision weights into the timm trunk. Weights made for this very timm model load by name;
    others (torchvision's, Keras', converted TF files) by name where every tensor's name is the same (torchvision's
    and timm's ResNets), else tensor by tensor in order. A classifier at the end of the file goes unused; a whole
    torchvision detector gives its trunk (`backbone.body.*`)."""
    if entry.mapping == "torchvision":
        trunk = {k.removeprefix("backbone.body."): v for k, v in state.items() if k.startswith("backbone.body.")}
        state = trunk or state
        own = learnt_tensors(model.state_dict())
        mapping = "name" if all(k in state and state[k].shape == v.shape for k, v in own.items()) else "position"
    else:
        mapping = "name" if entry.mapping != "position" and entry.arch == f"timm.{cfg.name}" else "position"
    load_into(model, state, mapping=mapping, what=cfg.weights, allow_unused_tail=True)


def hooked_features(model: nn.Module, nodes: list[str]) -> nn.Module:
    """timm's FeatureHookNet returning the outputs of the named modules; the layers after the last one are dropped.

    The channels and strides FeatureHookNet needs are measured with one small forward pass.
    """
    names = dict(model.named_modules())
    unknown = [n for n in nodes if n not in names]
    if unknown:
        raise ConfigError(f"model.backbone.feature_nodes: {unknown[0]!r} is not a module of this backbone"
                          f"{did_you_mean(unknown[0], names)}")
    shapes: dict[str, torch.Size] = {}
    handles = [names[n].register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, o.shape)) for n in nodes]
    side = 128
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, side, side))
    for handle in handles:
        handle.remove()
    model.feature_info = [dict(module=n, num_chs=shapes[n][1], reduction=side // shapes[n][-1]) for n in nodes]
    try:
        return FeatureHookNet(model, out_indices=tuple(range(len(nodes))), no_rewrite=False)
    except AssertionError:
        raise ConfigError(f"model.backbone.feature_nodes: {nodes} must be in the order the network runs them, "
                          "coarser levels last") from None


def unfreeze_backbone(model: nn.Module, *, keep_bn_frozen: bool) -> None:
    """Make every stage of the model's backbone trainable again (FrozenBatchNorm back to BatchNorm unless
    `keep_bn_frozen`). New modules replace the frozen ones: rebuild the optimizer afterwards."""
    for module in model.modules():
        if isinstance(module, Backbone):
            timm_unfreeze(module.body, include_bn_running_stats=not keep_bn_frozen)


def freeze_stages(body: nn.Module, n: int) -> None:
    """Freeze the stem and the first `n` feature stages; their BatchNorms become FrozenBatchNorm2d."""
    if n == 0:
        return
    infos = getattr(body.feature_info, "info", body.feature_info)  # a features_only net's FeatureInfo, or a list
    stages = [info["module"] for info in infos]
    if n > len(stages):
        raise ConfigError(f"model.backbone.freeze: expected int 0..{len(stages)} for this backbone, got {n}")
    names = [name for name, _ in body.named_modules()]
    stage = stages[n - 1]
    stage = stage if stage in names else stage.replace(".", "_")  # FeatureListNet flattens dotted names
    last = max(i for i, name in enumerate(names) if name == stage or name.startswith(stage + "."))
    inside, outside = names[1 : last + 1], names[last + 1 :]
    whole = {n for n in inside if not any(o.startswith(n + ".") for o in outside)}  # subtree fully frozen
    top = [n for n in inside if n in whole and (n.rpartition(".")[0] not in whole)]
    timm_freeze(body, top, include_bn_running_stats=True)
