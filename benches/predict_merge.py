"""The end of a `predict` run: writing results.json, images.json, detections.csv and skipped.txt from the
journal, at 100k and 1M images. Memory, not the model, is what bounds a run of millions of images here.

The journal holds real entries: the COCO SSD's on the sample photos (`cvpipe predict` at the pipeline's
default confidence), repeated under N names, one in a thousand a skipped corrupt file, in shuffled order (as Ray's
actors finish them). Each size runs in two fresh processes:
- `held` (the baseline): every entry parsed into memory first, then the task's writers fed from that list; this
  is how the merge worked before it streamed;
- `streamed`: what `predict` does now (`JournalIndex` + `write_outputs`: an index of where each entry lies, the
  entries read back one at a time in discovery order).
Printed: peak RSS growth over the process's size before the merge, and seconds; the ratio is streamed ÷ held.
Run: `python benches/predict_merge.py [--sizes 100000 1000000]`; results in benches/results/predict_merge.json.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import save_results  # benches/common.py: the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipelines" / "coco_ssd_mobilenet_v2.yaml"


def real_entries(tmp: Path) -> list[dict]:
    """The COCO SSD's journal entries on the sample photos."""
    from cvpipe.data.fetchers import fetch_dataset

    photos = fetch_dataset("photos", REPO / "data")
    out = tmp / "photos_run"
    subprocess.run([sys.executable, "-m", "cvpipe", "predict", str(PIPELINE), "--source", str(photos), "--out",
                    str(out), "--no-images"], check=True, capture_output=True, cwd=REPO)
    return [json.loads(line) for line in (out / ".journal.jsonl").read_text().splitlines()]


def make_journal(folder: Path, entries: list[dict], n: int) -> list[str]:
    """A journal of `n` images in shuffled order; returns the names in discovery order."""
    names = [f"part{i // 500:05d}/{i:07d}.jpg" for i in range(n)]
    order = list(range(n))
    random.Random(0).shuffle(order)
    with open(folder / ".journal.jsonl", "w", encoding="utf-8") as journal:
        for i in order:
            entry = {"file": names[i], "skipped": "corrupt JPEG"} if i % 1000 == 999 else \
                {**entries[i % len(entries)], "file": names[i]}
            journal.write(json.dumps(entry) + "\n")
    (folder / "names.json").write_text(json.dumps(names))
    return names


def worker(folder: Path, mode: str) -> None:
    """One merge in this process; prints the peak RSS growth (MiB) and seconds as JSON."""
    from cvpipe.engine.journal import JournalIndex, journal_paths
    from cvpipe.engine.predict import PredictReport, write_outputs
    from cvpipe.tasks import get_task

    names = json.loads((folder / "names.json").read_text())
    classes = [f"class{k}" for k in range(91)]
    task, report = get_task("detect"), PredictReport(folder, 0, 0, conf=0.25, conf_source="bench")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if mode == "streamed":
        write_outputs(folder, JournalIndex(journal_paths(folder, 1)), names, classes, report, task)
    else:
        held = {}
        with open(folder / ".journal.jsonl", "rb") as journal:
            for line in journal:
                entry = json.loads(line)
                held[entry["file"]] = entry
        finished = [(k, name, held[name]) for k, name in enumerate(names, start=1)
                    if name in held and "skipped" not in held[name]]
        task.write_results(folder, finished, classes, {})
    seconds = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"mode": mode, "peak_rss_growth_mib": grown, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode per size; medians are kept")
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), args.worker[1])
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        entries = real_entries(Path(tmp))
        print(f"{len(entries)} real entries, {statistics.mean(len(json.dumps(e)) for e in entries):.0f} bytes each")
        for n in args.sizes:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            make_journal(folder, entries, n)
            runs = {"held": [], "streamed": []}
            for _ in range(args.repeats):
                for mode in runs:
                    done = subprocess.run([sys.executable, __file__, "--worker", str(folder), mode], check=True,
                                          capture_output=True, text=True)
                    runs[mode].append(json.loads(done.stdout.splitlines()[-1]))
            row = {"images": n, "journal_mib": (folder / ".journal.jsonl").stat().st_size / 2**20}
            for mode, results in runs.items():
                row[f"{mode}_rss_mib"] = statistics.median(r["peak_rss_growth_mib"] for r in results)
                row[f"{mode}_seconds"] = statistics.median(r["seconds"] for r in results)
            row["rss_ratio"] = row["streamed_rss_mib"] / row["held_rss_mib"]
            row["time_ratio"] = row["streamed_seconds"] / row["held_seconds"]
            rows.append(row)
            print(f"{n:>9,} images, journal {row['journal_mib']:.0f} MiB: peak RSS growth held "
                  f"{row['held_rss_mib']:.0f} MiB, streamed {row['streamed_rss_mib']:.0f} MiB "
                  f"(× {row['rss_ratio']:.2f}); seconds held {row['held_seconds']:.1f}, streamed "
                  f"{row['streamed_seconds']:.1f} (× {row['time_ratio']:.2f})")
    print(f"→ {save_results('predict_merge', {'entries': len(entries), 'rows': rows})}")


if __name__ == "__main__":
    main()
