"""Checkpoints: one dict of tensors and plain values, written atomically, read with `weights_only=True`.

Keys: `model` (state dict), `classes`, `config` (the pipeline as JSON-able dict), `epoch` (finished epochs),
`iteration`, `epochs` (the schedule's length), `best` (value of `eval.best`), `history` (one row per
epoch), and for resuming `optimizer`, `scaler`, `ema`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cvpipe.errors import WeightsError
from cvpipe.models.weights import load_failure
from cvpipe.paths import atomic_path


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint; train first (`cvpipe train PIPELINE.yaml`) or pass "
                           "--weights with a .pt file from a run folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign / pickled-object files
        raise WeightsError(f"{path}: corrupt or not a cvpipe checkpoint ({load_failure(e)}); use a best.pt or "
                           "last.pt from a run folder, or re-run the training that made it") from None
    if not isinstance(state, dict) or "model" not in state or "classes" not in state:
        raise WeightsError(f"{path}: not a cvpipe checkpoint (no 'model' and 'classes' entries); "
                           "import plain weights with `cvpipe weights import` instead")
    return state


def check_classes(path: Path, trained: list[str], classes: list[str]) -> None:
    """A checkpoint's head only fits the classes it was trained for."""
    if list(trained) != list(classes):
        raise WeightsError(
            f"{path}: checkpoint was trained for {len(trained)} classes {list(trained)[:10]}, this pipeline's "
            f"data has {len(classes)} {classes[:10]}; run it with the pipeline it was trained with "
            f"({Path(path).parent / 'pipeline.yaml'}), set data.classes to the checkpoint's classes, or fine-tune "
            "from it with model.backbone.weights"
        )


def load_trained(config, path: Path | None, device: torch.device):
    """(model in eval mode on `device`, its classes) from a checkpoint made for this pipeline's architecture and
    its `data.classes` (where the pipeline lists them);
    `path=None`: the pipeline's own `model.weights` (a ready detector), for the classes in `data.classes`."""
    from cvpipe.models.heads import build_model
    from cvpipe.models.weights import recorded_preprocess

    if path is None:
        return _ready_model(config, device)
    state = load_checkpoint(path)
    classes = list(state["classes"])
    if config.data.classes:  # every command that runs a checkpoint refuses one trained for other classes
        check_classes(path, classes, config.data.classes)
    model = build_model(config, len(classes), pretrained=False, preprocess=recorded_preprocess(state))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))[:300]
        trained = state.get("config", {}).get("model", {})
        raise WeightsError(
            f"{path}: checkpoint does not fit this pipeline's model (it was trained with backbone "
            f"{trained.get('backbone', {}).get('name')!r}, head {trained.get('head', {}).get('name')!r}); "
            f"use the pipeline it was trained with ({Path(path).parent / 'pipeline.yaml'}). First mismatch: {first}"
        ) from None
    return _for_inference(model, config, device), classes


def _ready_model(config, device: torch.device):
    """(model, classes) of the pipeline's `model.weights`; the classes are `data.classes`, else the label set the
    weights were trained on (ImageNet-1k's 1,000)."""
    from cvpipe.models.heads import build_model, reuse_classes
    from cvpipe.models.weights import WeightsCatalog

    catalog = WeightsCatalog.load()
    entry = catalog.get(config.model.weights)
    classes = list(config.data.classes) or entry.class_names()
    if entry.num_classes == len(classes):
        return _for_inference(build_model(config, entry.num_classes, catalog=catalog), config, device), classes
    # a subset of the weights' classes (COCO's 80 of torchvision's 91 outputs): their rows, picked by name
    model = build_model(config, len(classes), catalog=catalog)
    picked = reuse_classes(model, config, classes, catalog=catalog) if entry.class_names() else {}
    missing = [c for c in classes if c not in picked]
    if missing:
        raise WeightsError(f"model.weights {entry.id} knows {entry.num_classes} classes, data.classes lists "
                           f"{len(classes)}, and {len(missing)} of them ({', '.join(missing[:5])}) are not among the "
                           "weights' classes; train this pipeline first (`cvpipe train`) or pass --weights")
    return _for_inference(model, config, device), classes


def _for_inference(model, config, device: torch.device):
    model = model.to(device).eval()
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
