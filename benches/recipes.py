"""The training recipes' table: each bundled pipeline trained at its own budget with several seeds, then evaluated
plain (one view, as video, Ray prediction and every export run it) and with its test-time views; median and
range over the seeds, and the plain model's share of what the views reach (the baseline, measured in the same
run on the same checkpoints).

Run: `python benches/recipes.py` (every row, 3 seeds: about 2 hours on 2 cores); `--rows treecrowns_faster_rcnn
--seeds 0` for one quick row; `--set KEY=VALUE ...` to try a recipe on every row (e.g. `train.ema=true`).
Training runs are the pipelines' own, time-limited: on a busy machine fewer epochs fit, so run it alone.

`--cost WEIGHTS` times `predict` on the tree-crown val image with a treecrowns_faster_rcnn checkpoint instead:
the bundled evaluation (slices at 0.8×, `refine_boxes`) against the previous one (slices at 1×, one pass), plain,
alternating `--repeats` times, medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import RESULTS, save_results
from rich.console import Console

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.models.weights import WeightsCatalog
from cvpipe.pipeline import Pipeline
from cvpipe.tasks import get_task

ROWS = {  # pipeline: (dataset, the stats reported; the first is the headline)
    "treecrowns_faster_rcnn": ("treecrowns", ("AP50", "AP")),
    "treecrowns_yolo": ("treecrowns", ("AP50", "AP")),
    "treecrowns_ssd": ("treecrowns", ("AP50", "AP")),
    "nuclei_mask_rcnn": ("nuclei", ("AP", "AP50")),  # mask AP (box AP is `box_AP`)
}


def run_row(name: str, seeds: list[int], overrides: list[str], tmp: Path) -> dict:
    dataset, stats = ROWS[name]
    fetch_dataset(dataset)
    model = Pipeline.from_yaml(name, overrides, console=Console(quiet=True)).config.model
    for weights in {model.weights, model.backbone.weights} - {None}:  # fetched before any clock runs
        WeightsCatalog.load().fetch(weights)
    runs = []
    for seed in seeds:
        out = tmp / f"{name}_{seed}"
        settings = [*overrides, f"output.dir={out}", f"train.seed={seed}"]
        trainer = Pipeline.from_yaml(name, settings, console=Console(quiet=True))
        fit = trainer.fit(tensorboard=False)
        run = {"seed": seed, "epochs": len(fit.history)}
        for views in ("plain", "views") if get_task(trainer.config.task).tta else ("plain",):  # masks: no views
            pipeline = Pipeline.from_yaml(name, [*settings, f"tta.enabled={str(views == 'views').lower()}"],
                                          console=Console(quiet=True))
            metrics = pipeline.evaluate(fit.best, json_path=out / f"{views}.json")
            run |= {f"{views} {stat}": metrics.stats[stat] for stat in stats}
        runs.append(run)
        print(name, run, flush=True)
    summary = {}
    for key in runs[0]:
        if key != "seed":
            values = [run[key] for run in runs]
            summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return {"pipeline": name, "overrides": overrides, "runs": runs, "summary": summary}


PREVIOUS_EVALUATION = ["model.head.min_size=400", "model.head.max_size=400", "model.head.refine_boxes=false"]


def predict_cost(weights: Path, repeats: int) -> None:
    """Seconds of plain `predict` (its own clock: decode, slice, detect, merge) with the bundled evaluation and with
    the previous one, on the same checkpoint, alternating."""
    (image,) = sorted((fetch_dataset("treecrowns") / "val").glob("*.png"))
    plain = ["tta.enabled=false", "output.save_images=false"]
    previous, bundled = "previous (1x, one pass)", "bundled (0.8x, refine_boxes)"
    setups = {previous: PREVIOUS_EVALUATION, bundled: []}
    seconds: dict[str, list[float]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats + 1):  # the first round warms up and is not counted
            for name, overrides in setups.items():
                pipeline = Pipeline.from_yaml("treecrowns_faster_rcnn", [*plain, *overrides],
                                              console=Console(quiet=True))
                report = pipeline.predict(image, Path(tmp) / f"{k}_{len(overrides)}", weights=weights)
                if k:
                    seconds[name].append(report.seconds)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, median in medians.items():
        print(f"{name:<30} {median:6.2f} s (median of {repeats})")
    ratio = medians[bundled] / medians[previous]
    print(f"bundled ÷ previous = {ratio:.2f}")
    print(f"→ {save_results('recipe_cost', {'weights': str(weights), 'seconds': seconds, 'ratio': ratio})}")


def save_rows(rows: list[dict]) -> Path:
    """benches/results/recipes.json with these rows replacing earlier results of the same pipelines; the others
    (measured by earlier `--rows` runs) are kept."""
    path = RESULTS / "recipes.json"
    kept = json.loads(path.read_text())["rows"] if path.exists() else []
    names = {row["pipeline"] for row in rows}
    merged = [row for row in kept if row["pipeline"] not in names] + rows
    return save_results("recipes", {"rows": sorted(merged, key=lambda row: list(ROWS).index(row["pipeline"]))})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed of each run")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="overrides for every row's pipeline")
    parser.add_argument("--cost", type=Path, metavar="WEIGHTS", help="time predict with a treecrowns_faster_rcnn "
                        "checkpoint: the bundled evaluation against the previous one")
    parser.add_argument("--repeats", type=int, default=5, help="--cost: alternating runs")
    args = parser.parse_args()
    if args.cost:
        predict_cost(args.cost, args.repeats)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.rows:  # each row is saved as it finishes: a full table takes hours
            rows.append(run_row(name, args.seeds, args.overrides, Path(tmp)))
            print(f"→ {save_rows(rows)}", flush=True)
    print(f"\n{'pipeline':<24} {'stat':<6} {'plain median [range]':>22} {'views median [range]':>22} {'plain ÷ views':>13}")
    for row in rows:
        for stat in ROWS[row["pipeline"]][1]:
            plain, views = row["summary"][f"plain {stat}"], row["summary"].get(f"views {stat}")
            line = f"{row['pipeline']:<24} {stat:<6} {plain['median']:>7.3f} [{plain['min']:.3f}–{plain['max']:.3f}] "
            if views:  # instance pipelines have no test-time views
                ratio = plain["median"] / views["median"] if views["median"] else float("nan")
                line += f"{views['median']:>7.3f} [{views['min']:.3f}–{views['max']:.3f}] {ratio:>13.2f}"
            print(line)


if __name__ == "__main__":
    main()
