"""`cvpipe label audit`'s page: each finding drawn, best first (the label's box in red, the model's in green, cut
out of its image with some context around), as one self-contained offline HTML page like `eval --report`'s."""

from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np

from cvpipe.io.images import PER_FILE_ERRORS, read_image, scaled, write_text
from cvpipe.viz.report import STYLE, jpeg_data

LABEL, MODEL = (230, 40, 40), (30, 200, 60)  # RGB
SHOWN = 200  # findings drawn; audit.csv has them all
CONTEXT = 0.6  # the crop: the boxes and this much of their size around them
SIDE = 360  # each picture's long side, the crop scaled up or down to it


def finding_picture(image: np.ndarray, finding) -> np.ndarray:
    """The finding's boxes drawn on a crop of `image` around them (the whole image for a class finding), `SIDE`
    pixels on its long side; the model's box drawn wider, so that a label on the same place shows inside it."""
    boxes = [b for b in (finding.label_box, finding.model_box) if b]
    if not boxes:
        return scaled(image, SIDE / max(image.shape[:2]))
    x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    margin = max(32.0, CONTEXT * max(x2 - x1, y2 - y1))
    h, w = image.shape[:2]
    left, top = int(max(0, x1 - margin)), int(max(0, y1 - margin))
    right, bottom = int(min(w, x2 + margin)), int(min(h, y2 + margin))
    scale = SIDE / max(bottom - top, right - left, 1)
    crop = np.ascontiguousarray(scaled(image[top:bottom, left:right], scale))
    for box, color, thickness in ((finding.model_box, MODEL, 5), (finding.label_box, LABEL, 2)):
        if box:
            corners = [round((v - origin) * scale) for v, origin in zip(box, (left, top, left, top))]
            cv2.rectangle(crop, corners[:2], corners[2:], color, thickness)
    return crop


def caption(rank: int, finding) -> str:
    said = f"{rank}. {finding.kind}, score {finding.score:.2f}: {finding.file}"
    if finding.label_class:
        said += f"; label {finding.label_class}"
    if finding.model_class:
        said += f"; model {finding.model_class}"
    return said


def write_audit_page(path: Path, title: str, facts: list[tuple[str, str]], findings: list, images: dict) -> None:
    """`images`: file → its data.records.Record. Each image is read once, for all its findings shown."""
    shown = list(enumerate(findings[:SHOWN], start=1))
    figures: dict[int, str] = {}
    for file in dict.fromkeys(f.file for _, f in shown):
        try:
            image = read_image(images[file].path)
        except PER_FILE_ERRORS:
            continue
        for rank, finding in shown:
            if finding.file == file:
                text = html.escape(caption(rank, finding))
                figures[rank] = (f'<figure><img alt="{text}" src="{jpeg_data(finding_picture(image, finding), SIDE)}">'
                                 f"<figcaption>{text}</figcaption></figure>")
    counts = {}
    for finding in findings:
        counts[finding.kind] = counts.get(finding.kind, 0) + 1
    summary = ", ".join(f"{count} {kind}" for kind, count in counts.items()) or "nothing found"
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                   for k, v in [*facts, ("findings", summary)])
    legend = ('<p><span style="color:rgb(230,40,40)">■ the label</span> &nbsp; '
              '<span style="color:rgb(30,200,60)">■ the model</span>'
              f" &nbsp; (the first {SHOWN} of {len(findings)}; audit.csv lists them all)</p>" if findings else "")
    body = (f"<h1>{html.escape(title)}</h1><table class=\"facts\">{rows}</table>{legend}"
            f"<div class=\"examples\">{''.join(figures[rank] for rank, _ in shown if rank in figures)}</div>")
    write_text(Path(path), f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
                           f"{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>\n")
