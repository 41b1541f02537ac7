"""`cvpipe eval --report`: one self-contained HTML page of an evaluation, viewable offline (no script, no
external asset: the plots and pictures are inline PNG / JPEG data). Whatever the task, it is the metrics
object's own parts: `table()` (rich tables, exported by rich as HTML), `plots()` and `examples()` (the worst val
images, drawn) and `advice()` (metrics/base.py).
"""

from __future__ import annotations

import base64
import html
import io
import tempfile
from pathlib import Path

import cv2
import numpy as np

from cvpipe.console import make_console
from cvpipe.io.images import scaled, write_text

EXAMPLE_SIDE = 900  # pictures are downscaled to this many pixels on their long side

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table.facts td { padding: 0.1em 1em 0.1em 0; vertical-align: top; }
pre.rich { font-size: 0.8em; line-height: 1.25; background: #fafafa; padding: 0.8em; overflow-x: auto; }
.plots img { max-width: 100%; margin: 0.5em 0; border: 1px solid #eee; }
.examples figure { display: inline-block; margin: 0.5em; vertical-align: top; max-width: 560px; }
.examples img { max-width: 100%; } figcaption { font-size: 0.85em; }
ul.advice li { margin: 0.4em 0; }
"""


def _png_data(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def jpeg_data(rgb: np.ndarray, side: int = EXAMPLE_SIDE) -> str:
    """A picture as inline JPEG data, downscaled to `side` pixels on its long side where larger."""
    scale = min(1.0, side / max(rgb.shape[:2]))
    if scale < 1:
        rgb = scaled(rgb, scale)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode()


def _tables_html(parts: list) -> str:
    # markup off: a class name such as `[link=javascript:…]x` or `[/x]` is data, shown as it is (and escaped below)
    console = make_console(record=True, width=130, file=io.StringIO(), color_system="truecolor")
    for part in parts:
        console.print(part)
    return console.export_html(inline_styles=True, code_format='<pre class="rich">{code}</pre>')


def render_report(title: str, facts: list[tuple[str, str]], metrics, records: dict, classes: list[str]) -> str:
    """The page's HTML. `records`: image id → data.records.Record of the evaluated split."""
    sections = [f"<h1>{html.escape(title)}</h1>", '<table class="facts">'
                + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in facts)
                + "</table>"]
    advice = metrics.advice()
    if advice:
        sections.append("<h2>What to try</h2><ul class=\"advice\">"
                        + "".join(f"<li>{html.escape(line)}</li>" for line in advice) + "</ul>")
    sections.append("<h2>Metrics</h2>" + _tables_html(metrics.table()))
    with tempfile.TemporaryDirectory() as tmp:
        names = [name.split(" ")[0] for name in metrics.plots(Path(tmp))]
        images = "".join(f'<img alt="{html.escape(name)}" src="{_png_data(Path(tmp) / name)}">' for name in names)
    sections.append(f'<h2>Plots</h2><div class="plots">{images}</div>')
    examples = metrics.examples(records, classes)
    if examples:
        figures = "".join(f'<figure><img alt="{html.escape(caption)}" src="{jpeg_data(picture)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>" for caption, picture in examples)
        sections.append(f'<h2>Worst val images</h2><div class="examples">{figures}</div>')
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")


def write_report(path: Path, title: str, facts: list[tuple[str, str]], metrics, records: dict,
                 classes: list[str]) -> Path:
    write_text(Path(path), render_report(title, facts, metrics, records, classes))
    return Path(path)
