"""The one "did you mean" helper for names a user mistyped (keys, transforms, models, weights ids)."""

from __future__ import annotations

import difflib


def did_you_mean(word: str, choices, *, cutoff: float = 0.6) -> str:
    """`; did you mean "x"?` for the closest of `choices`, or "" when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=cutoff)
    return f'; did you mean "{close[0]}"?' if close else ""
