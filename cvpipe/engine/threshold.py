"""Which confidence `predict` and `video` keep detections at: a number given, or the best-F1 threshold a trained
checkpoint carries from its val evaluation (metrics/detection_analysis.py), which is the default where there is
one. A pipeline with test-time augmentation has two: the plain evaluation's (`threshold`, what `video` sees) and
the one with the views (`threshold_tta`, what `predict` sees; fused scores sit elsewhere)."""

from __future__ import annotations

from pathlib import Path

import torch

from cvpipe.errors import ConfigError

DEFAULT_CONF = 0.25  # where neither --conf nor the checkpoint says (a ready model, an older checkpoint)
KEYS = {False: "threshold", True: "threshold_tta"}  # a checkpoint's metrics entry, plain or with the views
ONNX_KEYS = {False: "cvpipe_conf", True: "cvpipe_conf_tta"}  # an exported graph's metadata entries


def carried_conf(weights: Path | None, views: bool = False) -> float | None:
    """The best-F1 confidence on val that a checkpoint's metrics, or an exported graph's metadata, carry; with
    `views`, the one measured with test-time augmentation where there is one."""
    if weights is None or not Path(weights).is_file():
        return None
    if Path(weights).suffix == ".onnx":
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(weights), load_external_data=False).metadata_props}
        key = next((ONNX_KEYS[v] for v in (views, False) if ONNX_KEYS[v] in meta), None)
        return float(meta[key]) if key else None
    try:  # memory-mapped: only the metrics are read, not the weights
        state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint: loading it for the model reports what is wrong
        return None
    metrics = (state.get("metrics") or {}) if isinstance(state, dict) else {}
    threshold = metrics.get(KEYS[views]) or metrics.get(KEYS[False])
    return float(threshold["conf"]) if threshold else None


def carried_thresholds(weights: Path | None) -> dict[str, float]:
    """An exported graph's metadata entries for a checkpoint's thresholds."""
    found = {ONNX_KEYS[v]: carried_conf(weights, v) for v in (False, True)}
    if found[ONNX_KEYS[True]] == found[ONNX_KEYS[False]]:
        del found[ONNX_KEYS[True]]
    return {key: value for key, value in found.items() if value is not None}


def resolve_conf(conf: float | str | None, weights: Path | None, views: bool = False) -> tuple[float, str]:
    """(confidence, where it came from). `conf`: a number, kept; "auto": the checkpoint's best-F1 threshold (with
    `views`, the one measured with test-time augmentation) or an error where it has none; None: that threshold
    where there is one, else DEFAULT_CONF."""
    if conf is not None and conf != "auto":
        return float(conf), "--conf"
    carried = carried_conf(weights, views)
    if carried is not None:
        how = " with test-time augmentation" if views and carried != carried_conf(weights) else ""
        return carried, f"best F1 on val{how}, carried by {Path(weights).name}"
    if conf == "auto":
        where = f"{weights}" if weights is not None else "the pipeline's ready model.weights"
        raise ConfigError(f"--conf auto: {where} carries no threshold (only checkpoints from `cvpipe train`, since "
                          f"the detection analysis, keep the best-F1 one); give --conf a number, e.g. {DEFAULT_CONF}")
    return DEFAULT_CONF, "the default" + (f"; {Path(weights).name} carries no threshold" if weights else "")
