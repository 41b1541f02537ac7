"""Training logs: one CSV row per epoch (`results.csv`) and TensorBoard scalars per iteration and epoch."""

from __future__ import annotations

import csv
from pathlib import Path


class RunLog:
    def __init__(self, run_dir: Path, *, tensorboard: bool = True):
        self.csv_path = Path(run_dir) / "results.csv"
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        if self.writer:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def epoch_row(self, history: list[dict]) -> None:
        """Rewrite the CSV from the history (columns can grow when evaluation starts), flushed every epoch."""
        columns = list(dict.fromkeys(k for row in history for k in row))
        tmp = self.csv_path.with_name(".results.csv.part")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(history)
        tmp.replace(self.csv_path)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
