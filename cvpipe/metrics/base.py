"""What every task's metrics object gives the engine and `eval --report`: `stats`, `as_json()`, `table()` (what
the console prints), `plots(out_dir)`, and for the report `examples()` (the worst val images, drawn) and
`advice()` (what to try), which default to none."""

from __future__ import annotations

import numpy as np


def finite(x: float) -> float | None:
    """A metric for JSON: NaN (nothing to score) as null."""
    return None if np.isnan(x) else float(x)


class Metrics:
    def examples(self, records: dict, classes: list[str], n: int = 8) -> list[tuple[str, np.ndarray]]:
        """(caption, RGB picture) of up to `n` of the worst val images; `records`: image id → Record."""
        return []

    def advice(self) -> list[str]:
        return []
