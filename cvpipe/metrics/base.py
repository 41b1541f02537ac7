"""What every task's metrics object gives the engine and `eval --report`: `stats`, `as_json()`, `table()` (what
the console prints), `plots(out_dir)`, and for the report `examples()` (the worst val images, drawn) and
`advice()` (what to try), which default to none."""

from __future__ import annotations

import numpy as np


class Metrics:
    def examples(self, records: dict, classes: list[str], n: int = 8) -> list[tuple[str, np.ndarray]]:
        """(caption, RGB picture) of up to `n` of the worst val images; `records`: image id → Record."""
        return []

    def advice(self) -> list[str]:
        return []
