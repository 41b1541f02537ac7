"""`cvpipe stylize`: Gatys style transfer of every image under a folder, file or glob, one style image.

Each content image (long side resized to `size`) is optimised on its own; the result, a side-by-side
(content | style | result) and one CSV row of losses before/after and seconds are written per image. An
unreadable image is listed in `skipped.txt` and the run goes on.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console

from cvpipe.engine.device import resolve_device
from cvpipe.engine.predict import discover
from cvpipe.errors import DataError, WeightsError
from cvpipe.io.images import read_image, write_image, write_text
from cvpipe.models.style import GatysLoss, LayerOutputs, stylize_image, vgg_layers


@dataclass
class StylizeReport:
    out: Path
    rows: list[dict] = field(default_factory=list)  # file, seconds, losses before/after
    skipped: list[tuple[str, str]] = field(default_factory=list)


def resize_long_side(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = size / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).contiguous().to(device)


def to_image(tensor: torch.Tensor) -> np.ndarray:
    return (tensor[0].permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)


def read_style(path: Path, size: int, device: torch.device) -> torch.Tensor:
    """The style image, long side `size`, as a 1×3×H×W float tensor in [0, 1]."""
    try:
        return to_tensor(resize_long_side(read_image(Path(path)), size), device)
    except DataError as e:
        raise DataError(f"style image: {e}") from None


def vgg_features(weights_id: str, device: torch.device) -> LayerOutputs:
    """The ReLU layers the style losses read, from a VGG-16/19 trunk in the weights catalogue."""
    from cvpipe.models.weights import WeightsCatalog, build_arch, load_into

    catalog = WeightsCatalog.load()
    entry = catalog.get(weights_id)
    try:
        layers = vgg_layers(entry.arch)
    except ValueError as e:
        raise WeightsError(f"--weights {weights_id}: {e}; use vgg16_hed.bsds or import a VGG file with "
                           "`cvpipe weights import FILE --arch torchvision.vgg19 --name ID`") from None
    model = build_arch(entry.arch)
    load_into(model, catalog.state_dict(weights_id), mapping=entry.mapping, what=weights_id)
    trunk = model if isinstance(model, torch.nn.Sequential) else model.features
    return LayerOutputs(trunk, layers, entry.preprocess.mean, entry.preprocess.std).to(device)


def side_by_side(content: np.ndarray, style: np.ndarray, result: np.ndarray) -> np.ndarray:
    """content | style (scaled to the content's height) | result, one image."""
    h = content.shape[0]
    style = cv2.resize(style, (max(1, round(style.shape[1] * h / style.shape[0])), h), interpolation=cv2.INTER_AREA)
    return np.concatenate([content, style, result], axis=1)


def stylize(source: str | Path, style: str | Path, out: Path, *, steps: int = 100, size: int = 256,
            style_weight: float = 1e5, content_weight: float = 1.0, tv_weight: float = 1e-3,
            optimizer: str = "lbfgs", weights: str = "vgg16_hed.bsds", device: str = "auto",
            features: LayerOutputs | None = None, console: Console | None = None) -> StylizeReport:
    console = console or Console()
    out, device = Path(out), resolve_device(device)
    files, root = discover(source)
    try:
        style_image = resize_long_side(read_image(Path(style)), size)
    except DataError as e:
        raise DataError(f"--style: {e}") from None
    features = features or vgg_features(weights, device)
    style_tensor = to_tensor(style_image, device)
    report = StylizeReport(out)
    for path in files:
        name = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
        try:
            content = resize_long_side(read_image(path), size)
        except DataError as e:
            report.skipped.append((name, str(e).split(": ", 1)[-1]))
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
    writer = csv.DictWriter(rows, ["file", "height", "width", "seconds", "content_before", "content_after",
                                   "style_before", "style_after"])
    writer.writeheader()
    writer.writerows(report.rows)
    write_text(out / "stylize.csv", rows.getvalue())
    write_text(out / "skipped.txt", "".join(f"{n}: {reason}\n" for n, reason in report.skipped))
    return report
