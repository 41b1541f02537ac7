"""Numbers typed by users or carried in URLs, parsed once and strictly: ASCII digits only (Python's `int()` also
takes '²', '٣' and thousands of digits), within bounds, so a bad one is a message naming it, never a traceback
or a value OpenCV or the socket layer chokes on."""

from __future__ import annotations

import re

from cvpipe.errors import CvpipeError

_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() is true for '²' and other scripts' digits


def parse_int(text: str, what: str, low: int = 0, high: int = 2**31 - 1) -> int:
    """`text` as an integer in [low, high], or CvpipeError naming `what` and the range."""
    value = int(text) if isinstance(text, str) and _DIGITS.fullmatch(text.strip()) else None
    if value is None or not low <= value <= high:
        raise CvpipeError(f"{what} {text[:40]!r}{'…' if len(text) > 40 else ''}: expected a whole number from "
                          f"{low} to {high} (digits 0-9)")
    return value


def is_int(text: str, low: int = 0, high: int = 2**31 - 1) -> bool:
    """Whether `text` is what `parse_int` accepts."""
    try:
        parse_int(text, "", low, high)
    except CvpipeError:
        return False
    return True
