"""Run folders: `<output.dir>/<name>`, then `<name>-2`, `<name>-3` ... so a new run never overwrites an old one."""

from __future__ import annotations

import re
from pathlib import Path

from cvpipe.config import PipelineConfig
from cvpipe.errors import WeightsError


def _runs(config: PipelineConfig) -> list[Path]:
    base = Path(config.output.dir)
    pattern = re.compile(rf"^{re.escape(config.name)}(-(\d+))?$")
    found = [(int(m.group(2) or 1), p) for p in base.glob(f"{config.name}*") if p.is_dir() and (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def new_run_dir(config: PipelineConfig) -> Path:
    runs = _runs(config)
    path = Path(config.output.dir) / (config.name if not runs else f"{config.name}-{len(runs) + 1}")
    while path.exists():
        path = path.with_name(path.name + "-new")
    path.mkdir(parents=True)
    return path


def latest_run_dir(config: PipelineConfig) -> Path | None:
    runs = [p for p in _runs(config) if (p / "last.pt").exists()]
    return runs[-1] if runs else None


def default_weights(config: PipelineConfig) -> Path | None:
    """The latest run's best.pt (else last.pt); None for an untrained pipeline whose `model.weights` make a
    ready model (a COCO detector); a clear error for any other pipeline that has never been trained."""
    run = latest_run_dir(config)
    if run is None and config.model.weights:
        return None
    if run is None:
        raise WeightsError(f"no trained checkpoint for pipeline {config.name!r} under {config.output.dir}/; "
                           f"run `cvpipe train` first or pass --weights CKPT")
    return run / "best.pt" if (run / "best.pt").exists() else run / "last.pt"
