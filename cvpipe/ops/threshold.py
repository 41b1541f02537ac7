"""Which confidence `predict` and `video` keep detections at: a number given, or the best-F1 threshold a trained
checkpoint carries from its val evaluation (metrics/detection_analysis.py), which is the default where there is
one. A pipeline with test-time augmentation has two: the plain evaluation's (`threshold`, what `video` sees) and
the one with the views (`threshold_tta`, what `predict` sees; fused scores sit elsewhere)."""

from __future__ import annotations

from pathlib import Path

import torch

from cvpipe.errors import ConfigError
from cvpipe.io.model_files import EXPORTED, exported_metadata

DEFAULT_CONF = 0.25  # where neither --conf nor the checkpoint says (a ready model, an older checkpoint)
KEYS = {False: "threshold", True: "threshold_tta"}  # a checkpoint's metrics entry, plain or with the views
ONNX_KEYS = {False: "cvpipe_conf", True: "cvpipe_conf_tta"}  # an exported model's metadata entries


def carried(weights: Path | None) -> dict[bool, float]:
    """The best-F1 confidences on val that a checkpoint's metrics, or an exported graph's metadata, carry: under
    False the plain one, under True the one measured with test-time augmentation; each where it has it."""
    return _read(weights)[0]


def _read(weights: Path | None) -> tuple[dict[bool, float], bool]:
    """(`carried`'s thresholds, whether the checkpoint's val evaluation found nothing (best F1 0) so that it
    carries none), from one read of the file."""
    if weights is None or not Path(weights).is_file():
        return {}, False
    if Path(weights).suffix in EXPORTED:
        meta = exported_metadata(weights)
        return {views: float(meta[key]) for views, key in ONNX_KEYS.items() if key in meta}, False
    try:  # memory-mapped: only the metrics are read, not the weights
        state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint: loading it for the model reports what is wrong
        return {}, False
    metrics = (state.get("metrics") or {}) if isinstance(state, dict) else {}
    found = {views: float(value["conf"]) for views, key in KEYS.items() if (value := metrics.get(key))}
    return found, "threshold" in metrics and metrics["threshold"] is None


def carried_thresholds(weights: Path | None) -> dict[str, float]:
    """An exported graph's metadata entries for a checkpoint's thresholds (the one with the views where it
    differs from the plain one)."""
    found = carried(weights)
    if found.get(True) == found.get(False):
        found.pop(True, None)
    return {ONNX_KEYS[views]: value for views, value in found.items()}


def resolve_conf(conf: float | str | None, weights: Path | None, views: bool = False) -> tuple[float, str]:
    """(confidence, where it came from). `conf`: a number, kept; "auto": the checkpoint's best-F1 threshold (with
    `views`, the one measured with test-time augmentation) or an error where it has none; None: that threshold
    where there is one, else DEFAULT_CONF."""
    if conf is not None and conf != "auto":
        return float(conf), "--conf"
    found, nothing = _read(weights)
    value = found.get(views, found.get(False))
    if value is not None:
        how = " with test-time augmentation" if views and value != found.get(False) else ""
        return value, f"best F1 on val{how}, carried by {Path(weights).name}"
    if conf == "auto":
        if nothing:
            raise ConfigError(f"--conf auto: {weights} carries no threshold, as its model found nothing on val (best "
                              f"F1 0); give --conf a number, e.g. {DEFAULT_CONF}, or train longer")
        where = f"{weights}" if weights is not None else "the pipeline's ready model.weights"
        raise ConfigError(f"--conf auto: {where} carries no threshold (only checkpoints from `cvpipe train`, since "
                          f"the detection analysis, keep the best-F1 one); give --conf a number, e.g. {DEFAULT_CONF}")
    if nothing:
        return DEFAULT_CONF, f"the default: the model found nothing on val (best F1 0), so {Path(weights).name} " \
                             "carries no threshold"
    return DEFAULT_CONF, "the default" + (f"; {Path(weights).name} carries no threshold" if weights else "")
