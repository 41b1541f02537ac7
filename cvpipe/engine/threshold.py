"""Which confidence `predict` and `video` keep detections at: a number given, or the best-F1 threshold a trained
checkpoint carries from its val evaluation (metrics/detection_analysis.py), which is the default where there is
one."""

from __future__ import annotations

from pathlib import Path

import torch

from cvpipe.errors import ConfigError

DEFAULT_CONF = 0.25  # where neither --conf nor the checkpoint says (a ready model, an older checkpoint)
ONNX_KEY = "cvpipe_conf"  # an exported graph's metadata entry for it


def carried_conf(weights: Path | None) -> float | None:
    """The best-F1 confidence on val that a checkpoint's metrics, or an exported graph's metadata, carry."""
    if weights is None or not Path(weights).is_file():
        return None
    if Path(weights).suffix == ".onnx":
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(weights), load_external_data=False).metadata_props}
        return float(meta[ONNX_KEY]) if ONNX_KEY in meta else None
    try:  # memory-mapped: only the metrics are read, not the weights
        state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint: loading it for the model reports what is wrong
        return None
    threshold = (state.get("metrics") or {}).get("threshold") if isinstance(state, dict) else None
    return float(threshold["conf"]) if threshold else None


def resolve_conf(conf: float | str | None, weights: Path | None) -> tuple[float, str]:
    """(confidence, where it came from). `conf`: a number, kept; "auto": the checkpoint's best-F1 threshold (an
    error where it has none); None: that threshold where there is one, else DEFAULT_CONF."""
    if conf is not None and conf != "auto":
        return float(conf), "--conf"
    carried = carried_conf(weights)
    if carried is not None:
        return carried, f"best F1 on val, carried by {Path(weights).name}"
    if conf == "auto":
        where = f"{weights}" if weights is not None else "the pipeline's ready model.weights"
        raise ConfigError(f"--conf auto: {where} carries no threshold (only checkpoints from `cvpipe train`, since "
                          f"the detection analysis, keep the best-F1 one); give --conf a number, e.g. {DEFAULT_CONF}")
    return DEFAULT_CONF, "the default" + (f"; {Path(weights).name} carries no threshold" if weights else "")
