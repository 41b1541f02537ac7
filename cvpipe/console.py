"""The console every command prints through: rich with markup and highlighting off, so a file name or a value
such as `scan [draft].jpg` or `[nan, 3]` prints exactly as it is. Colour comes only from `styled`."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text


def make_console(**kwargs) -> Console:
    return Console(markup=False, highlight=False, **kwargs)


def styled(label: str, style: str, rest: str = "") -> Text:
    """`label` in `style` (e.g. "yellow"), then `rest` as plain text."""
    return Text.assemble((label, style), rest)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 image`, `3 images`, `2 boxes`: a count with its noun in the right number."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
