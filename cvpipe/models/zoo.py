"""Weights by reference to their owners' zoos, beside the catalogue's ids:

- `timm:NAME[.TAG]`: timm's pretrained configs (the Hugging Face hub's `timm/` repos, else the config's URL);
- `hf-hub:REPO`: a timm-format repo on the Hugging Face hub;
- `torchvision:ENUM.MEMBER`: torchvision's weights (ImageNet backbones, COCO detectors);
- `deepforest:tree`, `deepforest:bird`: DeepForest's released RetinaNets (Hugging Face hub, `weecology/`).

Files come through the owners' own loaders and caches: `huggingface_hub.hf_hub_download` (HF_HOME, HF_HUB_OFFLINE)
and `torch.hub` (TORCH_HOME, the hash prefix in torchvision's file names checked on download). Nothing is copied
into cvpipe's weights folder; `WeightsCatalog` asks this module for the entry, the file and whether it is here.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from cvpipe.errors import WeightsError

KINDS = ("timm", "hf-hub", "torchvision", "deepforest")
DEEPFOREST = {"tree": ("weecology/deepforest-tree", ["Tree"]), "bird": ("weecology/deepforest-bird", ["Bird"])}
DEEPFOREST_ARCH = "retinanet_resnet50_fpn"  # DeepForest's RetinaNetHub: torchvision's RetinaNet, ResNet-50 FPN (v1)
# torchvision classification and detection builders → the timm backbone their trunk's tensors load into
TIMM_TWINS = {"resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50", "resnet101": "resnet101",
              "resnet152": "resnet152", "mobilenet_v2": "mobilenetv2_100"}
# torchvision detectors whose trunk is not named in their builder's name, and the timm twin it loads into
DETECTOR_TRUNKS = {"fasterrcnn_mobilenet_v3_large_fpn": "mobilenetv3_large_100",
                   "fasterrcnn_mobilenet_v3_large_320_fpn": "mobilenetv3_large_100",
                   "ssdlite320_mobilenet_v3_large": "mobilenetv3_large_100_reduced_tail", "ssd300_vgg16": "vgg16"}
# torchvision detectors that scale their input otherwise than by ImageNet's mean and std (SSDlite: to [-1, 1];
# SSD300: 0-255 less the mean, as the Caffe original)
DETECTOR_SCALING = {"ssdlite320_mobilenet_v3_large": dict(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
                    "ssd300_vgg16": dict(mean=[0.48235, 0.45882, 0.40784], std=[1 / 255] * 3)}
# torchvision builders whose class outputs start with the background
BACKGROUND_FIRST = ("fasterrcnn_", "maskrcnn_", "ssd")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # what timm's and the hub mixin's loaders look for, in order


def is_reference(weights_id: str | None) -> bool:
    return bool(weights_id) and weights_id.partition(":")[0] in KINDS and ":" in weights_id


@dataclass(frozen=True)
class Reference:
    kind: str  # one of KINDS
    name: str  # what follows the colon

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"


def parse(weights_id: str) -> Reference:
    kind, _, name = weights_id.partition(":")
    if kind not in KINDS or not name.strip():
        raise WeightsError(f"weights {weights_id!r}: expected timm:NAME[.TAG], hf-hub:REPO, torchvision:ENUM.MEMBER "
                           "or deepforest:tree|bird")
    if kind == "deepforest" and name not in DEEPFOREST:
        raise WeightsError(f"weights {weights_id}: DeepForest's released models are {', '.join(f'deepforest:{n}' for n in DEEPFOREST)}")
    return Reference(kind, name.strip())


def _on_terminal() -> bool:
    return sys.stderr.isatty()


def hf_file(repo: str, filenames: tuple[str, ...], ref: str, *, cached_only: bool = False) -> Path | None:
    """The first of `filenames` the hub repo has, through huggingface_hub's cache (offline: from the cache only).
    `cached_only`: None instead of fetching."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    for filename in filenames:
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached)
    if cached_only:
        return None
    missing = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo, filename))
        except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError: first)
            raise WeightsError(
                f"weights {ref}: {repo}/{filenames[0]} is not in the Hugging Face cache ({hf_cache()}) and the hub "
                f"cannot be reached (no network, or HF_HUB_OFFLINE set); on a connected machine run `cvpipe weights fetch {ref}` "
                "and copy that cache folder here (or point HF_HOME at a copy)") from None
        except EntryNotFoundError:
            missing.append(filename)
        except RepositoryNotFoundError:
            raise WeightsError(f"weights {ref}: the Hugging Face hub has no repository {repo}") from None
        except (HfHubHTTPError, OSError) as e:
            raise WeightsError(f"weights {ref}: could not fetch {repo}/{filename} from the Hugging Face hub ({e})") from None
    raise WeightsError(f"weights {ref}: the repository {repo} holds none of {', '.join(missing)}")


def hf_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


# --- timm and hf-hub -----------------------------------------------------------------------------------------------

def timm_config(ref: Reference):
    """timm's pretrained config of `timm:NAME[.TAG]` (its default tag where none is given)."""
    import timm
    from timm.models import get_pretrained_cfg

    arch = ref.name.partition(".")[0]
    if not timm.is_model(arch):
        from cvpipe.suggest import did_you_mean

        raise WeightsError(f"weights {ref.id}: timm has no model {arch!r}{did_you_mean(arch, timm.list_models())}")
    try:
        cfg = get_pretrained_cfg(ref.name)
    except RuntimeError as e:  # "Invalid pretrained tag (x) for y."
        tags = [name.partition(".")[2] for name in timm.list_pretrained(f"{arch}.*")]
        raise WeightsError(f"weights {ref.id}: {e} timm knows: {', '.join(tags) or '(none)'}") from None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise WeightsError(f"weights {ref.id}: timm has no pretrained weights for {ref.name}")
    return cfg


def hf_hub_config(ref: Reference) -> dict:
    """A timm-format hub repo's config.json (architecture, pretrained_cfg)."""
    path = hf_file(ref.name, ("config.json",), ref.id)
    try:
        config = json.loads(path.read_text())
        config["architecture"]  # noqa: B018 (the key timm needs)
    except (ValueError, KeyError, TypeError):
        raise WeightsError(f"weights {ref.id}: {path} is not a timm model config (no `architecture`)") from None
    return config


def timm_file(ref: Reference, *, cached_only: bool = False) -> Path | None:
    """The weights file timm loads for `timm:`/`hf-hub:` references, from the hub's cache or fetched into it
    (a config with only a URL: torch.hub's cache, as timm downloads it)."""
    if ref.kind == "hf-hub":
        return hf_file(ref.name, HF_WEIGHTS, ref.id, cached_only=cached_only)
    cfg = timm_config(ref)
    if cfg.hf_hub_id:
        names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_WEIGHTS
        return hf_file(cfg.hf_hub_id.split("@")[0], names, ref.id, cached_only=cached_only)
    return hub_url_file(cfg.url, ref.id, cached_only=cached_only)


# --- torch.hub URLs (torchvision's weights) ----------------------------------------------------------------------

def hub_url_file(url: str, ref: str, *, cached_only: bool = False) -> Path | None:
    """`url`'s file in torch.hub's checkpoint cache (TORCH_HOME), downloaded there when missing with the hash
    prefix its name carries checked (torch.hub's `check_hash`)."""
    import torch.hub
    from torch.hub import HASH_REGEX, download_url_to_file

    from cvpipe.paths import atomic_path

    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if path.is_file() or cached_only:
        return path if path.is_file() else None
    found = HASH_REGEX.search(path.name)
    print(f"weights {ref}: fetching {url} into {path.parent}", file=sys.stderr, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            download_url_to_file(url, str(tmp), hash_prefix=found.group(1) if found else None,
                                 progress=_on_terminal())
    except RuntimeError as e:  # torch.hub: 'invalid hash value (expected "…", got "…")'
        raise WeightsError(f"weights {ref}: the file downloaded from {url} fails its hash check ({e}); nothing was "
                           "kept; try again, or fetch it on another machine") from None
    except OSError as e:
        raise WeightsError(
            f"weights {ref}: {path} is not in torch.hub's cache and {url} cannot be reached ({e}); on a connected "
            f"machine run `cvpipe weights fetch {ref}` and copy {path.parent} here (or set TORCH_HOME to a copy)"
        ) from None
    return path


def torchvision_weight(ref: Reference):
    """torchvision's `WeightsEnum` member, and the builder it belongs to."""
    import torchvision.models as tvm

    enum_name, _, member = ref.name.partition(".")
    enums = {tvm.get_model_weights(builder).__name__: builder for builder in tvm.list_models()}
    if enum_name not in enums:
        from cvpipe.suggest import did_you_mean

        raise WeightsError(f"weights {ref.id}: torchvision has no weights enum {enum_name!r}"
                           f"{did_you_mean(enum_name, enums)} (torchvision:ENUM.MEMBER, e.g. "
                           "torchvision:ResNet50_Weights.IMAGENET1K_V2)")
    try:
        weight = tvm.get_weight(ref.name)
    except (ValueError, KeyError):
        members = [m.name for m in tvm.get_model_weights(enums[enum_name])]
        raise WeightsError(f"weights {ref.id}: {enum_name} has no member {member!r}; it has "
                           f"{', '.join(members)}") from None
    return weight, enums[enum_name]


# --- DeepForest ----------------------------------------------------------------------------------------------------

def deepforest_config(ref: Reference, *, cached_only: bool = False) -> dict:
    """The model's config.json (label_dict, thresholds), where it is here or can be fetched."""
    repo, labels = DEEPFOREST[ref.name]
    path = hf_file(repo, ("config.json",), ref.id, cached_only=cached_only)
    if path is None:
        return {"label_dict": {label: i for i, label in enumerate(labels)}}
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise WeightsError(f"weights {ref.id}: {path} is not JSON; delete it and fetch again") from None


# --- what the catalogue asks ---------------------------------------------------------------------------------------

def entry_fields(ref: Reference) -> dict:
    """The catalogue fields of a reference (WeightsEntry's), from the owner's own metadata."""
    if ref.kind in ("timm", "hf-hub"):
        if ref.kind == "timm":
            cfg = timm_config(ref)
            arch, mean, std = cfg.architecture, cfg.mean, cfg.std
            size, crop, interpolation, num_classes = cfg.input_size[-1], cfg.crop_pct, cfg.interpolation, cfg.num_classes
            license_ = cfg.license or ""
        else:
            config = hf_hub_config(ref)
            pre = config.get("pretrained_cfg", {})
            arch, mean, std = config["architecture"], pre.get("mean", (0.485, 0.456, 0.406)), pre.get("std", (0.229, 0.224, 0.225))
            size, crop = (pre.get("input_size") or [3, 224, 224])[-1], pre.get("crop_pct", 0.875)
            interpolation, num_classes = pre.get("interpolation", "bicubic"), config.get("num_classes", 0)
            license_ = pre.get("license", "")
        return dict(arch=f"timm.{arch}", mapping="timm", backbone=arch, format="timm", num_classes=num_classes or 0,
                    preprocess=dict(mean=list(mean), std=list(std), size=size, resize=int(round(size / (crop or 1))),
                                    interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bilinear"),
                    trained_on=ref.name.partition(".")[2] or "timm's default tag", license=license_, url=None)
    if ref.kind == "torchvision":
        weight, builder = torchvision_weight(ref)
        categories = list(weight.meta.get("categories") or [])
        if builder.startswith(BACKGROUND_FIRST) and categories[:1] == ["__background__"]:
            categories = categories[1:]  # output 0 is the background, not a class
        trunk = DETECTOR_TRUNKS.get(builder) or next((twin for name, twin in TIMM_TWINS.items()
                                                      if builder == name or builder.split("_")[1:2] == [name]), "")
        scaling = DETECTOR_SCALING.get(builder, dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))
        return dict(arch=f"torchvision.{builder}", mapping="torchvision", backbone=trunk, format="torch",
                    num_classes=len(categories), categories=categories, file=Path(weight.url).name,
                    preprocess=dict(**scaling, size=224, resize=256, interpolation="bilinear"),
                    trained_on=_trained_on(weight), license="BSD-3-Clause (torchvision)", url=weight.url)
    repo, _ = DEEPFOREST[ref.name]
    labels = deepforest_config(ref, cached_only=True).get("label_dict") or {}
    categories = [name for name, _ in sorted(labels.items(), key=lambda item: item[1])]
    return dict(arch=f"torchvision.{DEEPFOREST_ARCH}", mapping="torchvision", backbone="resnet50", format="hf",
                num_classes=len(categories), categories=categories, file=f"{repo}/model.safetensors",
                preprocess=dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], size=400, resize=400,
                                interpolation="bilinear"),
                trained_on=f"DeepForest {ref.name} detection (NEON aerial RGB)", license="MIT (DeepForest)",
                url=f"https://huggingface.co/{repo}")


def _trained_on(weight) -> str:
    metrics = weight.meta.get("_metrics") or {}
    dataset = next(iter(metrics), "")
    shown = ", ".join(f"{k} {v}" for k, v in (metrics.get(dataset) or {}).items())
    return f"{dataset} ({shown}; torchvision's figures)" if shown else dataset


def fetch(ref: Reference) -> Path:
    """The reference's weights file, from the owner's cache or fetched into it."""
    if ref.kind in ("timm", "hf-hub"):
        return timm_file(ref)
    if ref.kind == "torchvision":
        weight, _ = torchvision_weight(ref)
        return hub_url_file(weight.url, ref.id)
    repo, _ = DEEPFOREST[ref.name]
    deepforest_config(ref)
    return hf_file(repo, HF_WEIGHTS, ref.id)


def cached(ref: Reference) -> Path | None:
    """The file where the owner's cache has it, else None (nothing is fetched)."""
    try:
        if ref.kind in ("timm", "hf-hub"):
            return timm_file(ref, cached_only=True) if ref.kind == "timm" else hf_file(ref.name, HF_WEIGHTS, ref.id,
                                                                                          cached_only=True)
        if ref.kind == "torchvision":
            return hub_url_file(torchvision_weight(ref)[0].url, ref.id, cached_only=True)
        return hf_file(DEEPFOREST[ref.name][0], HF_WEIGHTS, ref.id, cached_only=True)
    except WeightsError:
        return None


# Reference examples `cvpipe weights list` shows under the catalogue.
EXAMPLES = [
    ("timm:convnext_tiny.fb_in22k", "any timm model and tag (timm.list_pretrained())"),
    ("hf-hub:timm/resnet50.a1_in1k", "a timm-format repo on the Hugging Face hub"),
    ("torchvision:ResNet50_Weights.IMAGENET1K_V2", "torchvision's ImageNet backbones"),
    ("torchvision:RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1", "a whole COCO detector (retinanet head)"),
    ("deepforest:tree", "DeepForest's tree-crown RetinaNet (retinanet head)"),
]
