"""`cvpipe stylize`: Gatys style transfer of every image under a folder, file or glob, one style image.

Each content image (long side resized to `size`) is optimised on its own; the result, a side-by-side
(content | style | result) and one CSV row of losses before/after and seconds are written per image. An
unreadable image is listed in `skipped.txt` and the run goes on.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from cvpipe.console import make_console
from cvpipe.errors import DataError
from cvpipe.io.images import (
    PER_FILE_ERRORS,
    discover,
    failure_reason,
    image_name,
    read_image,
    write_image,
    write_skipped,
    write_text,
)
from cvpipe.io.outputs import prepare_dir
from cvpipe.io.tables import csv_dict_writer
from cvpipe.models.style import (
    GatysLoss,
    LayerOutputs,
    resize_long_side,
    stylize_image,
    to_tensor,
    vgg_features,
)
from cvpipe.ops.device import resolve_device
from cvpipe.paths import find_data
from cvpipe.viz.draw import side_by_side


@dataclass
class StylizeReport:
    out: Path
    rows: list[dict] = field(default_factory=list)  # file, seconds, losses before/after
    skipped: list[tuple[str, str]] = field(default_factory=list)


def to_image(tensor: torch.Tensor) -> np.ndarray:
    return (tensor[0].permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)


def stylize(source: str | Path, style: str | Path, out: Path, *, steps: int = 100, size: int = 256,
            style_weight: float = 1e5, content_weight: float = 1.0, tv_weight: float = 1e-3,
            optimizer: str = "lbfgs", weights: str = "vgg16_hed.bsds", device: str = "auto",
            features: LayerOutputs | None = None, console: Console | None = None) -> StylizeReport:
    console = console or make_console()
    files, root = discover(source, exclude=out)  # a bad --source leaves no empty --out behind
    out, device = prepare_dir(out, "--out"), resolve_device(device)
    try:
        style_image = resize_long_side(read_image(find_data(style)), size)
    except DataError as e:
        raise DataError(f"--style: {e}") from None
    features = features or vgg_features(weights, device)
    style_tensor = to_tensor(style_image, device)
    report = StylizeReport(out)
    for path in files:
        name = image_name(path, root)
        try:
            content = resize_long_side(read_image(path), size)
        except PER_FILE_ERRORS as e:
            report.skipped.append((name, failure_reason(path, e)))
            continue
        content_tensor = to_tensor(content, device)
        loss = GatysLoss(features, content_tensor, style_tensor, content_weight=content_weight,
                         style_weight=style_weight, tv_weight=tv_weight)
        before = loss.report(content_tensor)
        start = time.perf_counter()
        result = stylize_image(loss, content_tensor, steps=steps, optimizer=optimizer)
        seconds = time.perf_counter() - start
        after = loss.report(result)
        result_image = to_image(result)
        stem = Path(name).with_suffix("")
        write_image(out / f"{stem}.png", result_image)
        write_image(out / f"{stem}_side_by_side.png", side_by_side(content, style_image, result_image))
        report.rows.append({"file": name, "height": content.shape[0], "width": content.shape[1],
                            "seconds": round(seconds, 2), "content_before": before.content, "content_after": after.content,
                            "style_before": before.style, "style_after": after.style})
        console.print(f"{name}: {seconds:.1f}s, style loss {before.style:.4g} → {after.style:.4g}, "
                      f"content loss {before.content:.4g} → {after.content:.4g}")
    rows = io.StringIO()
    writer = csv_dict_writer(rows, ["file", "height", "width", "seconds", "content_before", "content_after",
                                   "style_before", "style_after"])
    writer.writeheader()
    writer.writerows(report.rows)
    write_text(out / "stylize.csv", rows.getvalue())
    write_skipped(out / "skipped.txt", (f"{n}: {reason}" for n, reason in report.skipped))
    return report
