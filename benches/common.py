"""What every bench shares: where its results go (benches/results/NAME.json, written atomically)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from cvpipe.io.images import write_text

RESULTS = Path(__file__).resolve().parent / "results"


def save_results(name: str, data: dict) -> Path:
    """`data` plus the machine it was measured on, as benches/results/NAME.json."""
    path = RESULTS / f"{name}.json"
    machine = {"cpu_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    write_text(path, json.dumps({**data, "machine": machine}, indent=1))
    return path
