"""The training recipes' table: each bundled pipeline trained at its own budget with several seeds, then evaluated
plain (one view, as video, Ray prediction and every export run it) and with its test-time views; median and
range over the seeds, and the plain model's share of what the views reach (the baseline, measured in the same
run on the same checkpoints).

Run: `python benches/recipes.py` (every row, 3 seeds: about 2 hours on 2 cores); `--rows treecrowns_faster_rcnn
--seeds 1` for one quick row; `--set KEY=VALUE ...` to try a recipe on every row (e.g. `train.ema=true`).
Training runs are the pipelines' own, time-limited: on a busy machine fewer epochs fit, so run it alone.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import save_results
from rich.console import Console

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.models.weights import WeightsCatalog
from cvpipe.pipeline import Pipeline

ROWS = {  # pipeline: (dataset, the stats reported; the first is the headline)
    "treecrowns_faster_rcnn": ("treecrowns", ("AP50", "AP")),
    "treecrowns_yolo": ("treecrowns", ("AP50", "AP")),
    "treecrowns_ssd": ("treecrowns", ("AP50", "AP")),
    "nuclei_mask_rcnn": ("nuclei", ("AP", "AP50")),  # mask AP (box AP is `box_AP`)
}


def run_row(name: str, seeds: int, overrides: list[str], tmp: Path) -> dict:
    dataset, stats = ROWS[name]
    fetch_dataset(dataset)
    model = Pipeline.from_yaml(name, overrides, console=Console(quiet=True)).config.model
    for weights in {model.weights, model.backbone.weights} - {None}:  # fetched before any clock runs
        WeightsCatalog.load().fetch(weights)
    runs = []
    for seed in range(seeds):
        out = tmp / f"{name}_{seed}"
        settings = [*overrides, f"output.dir={out}", f"train.seed={seed}"]
        trainer = Pipeline.from_yaml(name, settings, console=Console(quiet=True))
        fit = trainer.fit(tensorboard=False)
        run = {"seed": seed, "epochs": len(fit.history)}
        for views in ("plain", "views"):
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="overrides for every row's pipeline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_row(name, args.seeds, args.overrides, Path(tmp)) for name in args.rows]
    print(f"\n{'pipeline':<24} {'stat':<6} {'plain median [range]':>22} {'views median [range]':>22} {'plain ÷ views':>13}")
    for row in rows:
        for stat in ROWS[row["pipeline"]][1]:
            plain, views = row["summary"][f"plain {stat}"], row["summary"][f"views {stat}"]
            ratio = plain["median"] / views["median"] if views["median"] else float("nan")
            print(f"{row['pipeline']:<24} {stat:<6} "
                  f"{plain['median']:>7.3f} [{plain['min']:.3f}–{plain['max']:.3f}] "
                  f"{views['median']:>7.3f} [{views['min']:.3f}–{views['max']:.3f}] {ratio:>13.2f}")
    print(f"→ {save_results('recipes', {'seeds': args.seeds, 'overrides': args.overrides, 'rows': rows})}")


if __name__ == "__main__":
    main()
