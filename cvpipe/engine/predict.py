"""`cvpipe predict`: batched inference over a folder, file or glob, written out as it goes; what each image
becomes (boxes, classes, masks, stylized copies) and the result files are the pipeline's task's (tasks/).

Decoding runs in loader workers; an unreadable file is reported in `skipped.txt` and the run goes on.
Every finished image is appended to a journal (`.journal.jsonl`), so `--resume` skips what is done and the
final files (`results.json` COCO results, `images.json`, `detections.csv`; for classification
`predictions.csv`; for segmentation `segmentation.csv`, beside the label PNGs) are rebuilt from the journal.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from torch.utils.data import DataLoader

from cvpipe.config import PipelineConfig, loader_workers
from cvpipe.console import counted, make_console
from cvpipe.data.augment import augment_image, build_augment
from cvpipe.data.samples import image_tensor
from cvpipe.engine import distributed
from cvpipe.engine.journal import Finished, JournalIndex, check_made_by, journal_paths, open_journal
from cvpipe.engine.progress import LoggedProgress
from cvpipe.engine.runtime import inference_model
from cvpipe.errors import CvpipeError
from cvpipe.io.images import PER_FILE_ERRORS, discover, failure_reason, image_name, read_image, write_skipped
from cvpipe.io.outputs import prepare_dir
from cvpipe.io.prefetch import Prefetch
from cvpipe.ops.device import resolve_device
from cvpipe.ops.threshold import resolve_conf
from cvpipe.ops.tta import describe
from cvpipe.tasks import get_task
from cvpipe.tasks.base import PredictJob, Task


@dataclass
class PredictReport:
    out: Path
    processed: int  # in this run
    resumed: int  # already done by an earlier run
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason), all runs
    seconds: float = 0.0
    counted: int = 0  # what the task counts in this run's results (detections), as it goes
    summary: str = ""  # ", 120 detections"
    written: list[str] = field(default_factory=list)  # what this run wrote under `out`, for the summary line
    conf: float | None = None  # the confidence kept at, where the task keeps by one (ops/threshold.py)
    conf_source: str = ""
    classes: list[str] = field(default_factory=list)  # the model's, in label order

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0


class ImageFiles(torch.utils.data.Dataset):
    """Decoded images; with `transform` (classification's eval resize/crop) applied."""

    def __init__(self, files: list[Path], transform=None):
        self.files = files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            image = read_image(self.files[i])
            return i, image_tensor(augment_image(self.transform, image) if self.transform else image), None
        except PER_FILE_ERRORS as e:
            return i, None, failure_reason(self.files[i], e)


@dataclass
class PredictRun:
    """What every way of predicting shares (local, `--shard`, torchrun, Ray): the output folder's journals and what
    they already hold, this shard's images still to do, the confidence, the report, and the result files at the
    end. Each engine supplies only how the images' batches are computed and appended to `journal`."""

    config: PipelineConfig
    task: Task
    out: Path
    names: list[str]  # every image's name, in discovery order
    classes: list[str]
    journals: list[Path]  # one per shard
    journal: Path  # this shard's
    identity: dict  # what made the entries (journal_identity): a resume into another's folder is refused
    todo: list[int]  # indices into `names`
    report: PredictReport
    resume: bool

    @classmethod
    def start(cls, config: PipelineConfig, out: Path, names: list[str], classes: list[str], weights: Path | None, *,
              conf: float | str | None, resume: bool, shard: tuple[int, int] = (0, 1)) -> PredictRun:
        k, shards = shard
        task = get_task(config.task)
        journals = journal_paths(out, shards)
        identity = journal_identity(config, classes, weights)
        check_made_by(journals if resume else [p for p in journals if p != journals[k]], identity)
        done = JournalIndex(journals if resume else [])
        todo = [i for i, name in enumerate(names) if i % shards == k and name not in done]
        report = PredictReport(out, 0, len(done), classes=list(classes))
        if task.thresholded:
            report.conf, report.conf_source = resolve_conf(conf, weights, views=config.tta.enabled and task.tta)
        return cls(config, task, out, names, classes, journals, journals[k], identity, todo, report, resume)

    def open_journal(self):
        """This shard's journal, to append finished entries to (`engine/journal.open_journal`)."""
        return open_journal(self.journal, resume=self.resume, made_by=self.identity)

    def finish(self, save_images: bool) -> JournalIndex:
        """The result files from every shard's journal, into `report.written`; returns the journals' index."""
        report, task = self.report, self.task
        report.summary = f", {report.counted} {task.counted}" if task.counted else ""
        index = JournalIndex(self.journals)
        report.written = task.output_folders(save_images) + write_outputs(self.out, index, self.names, self.classes,
                                                                          report, task)
        return index


def predict(config: PipelineConfig, source: str | Path, out: Path, weights: Path | None, *,
            conf: float | str | None = None,
            resume: bool = False, save_images: bool | None = None, backend: str = "auto",
            shard: tuple[int, int] | None = None, console: Console | None = None) -> PredictReport:
    """`shard=(k, n)`: only every n-th image from the k-th, into its own journal; the result files are written
    from the journals of all n shards found in `out`. Under torchrun the shard is the process's rank, and rank 0
    writes the result files once every rank has finished. `conf`: engine/threshold.resolve_conf."""
    rank = distributed.setup(config.train.device)
    if shard is None:
        shard = (rank.rank, rank.world)
    elif rank.distributed:
        raise CvpipeError("--shard: under torchrun each process takes its rank's shard; leave --shard out")
    k, shards = shard
    if not 0 <= k < shards:
        raise CvpipeError(f"--shard {k}/{shards}: expected K/N with 0 ≤ K < N")
    console = console if rank.main and console is not None else make_console(quiet=not rank.main)
    files, root = discover(source, exclude=out)  # a bad --source leaves no empty --out behind
    out = prepare_dir(out, "--out")  # before the model loads: a bad --out fails in a second
    device = distributed.device_for(rank, resolve_device(config.train.device))
    model, classes, backend, why = inference_model(config, weights, device, backend)
    save_images = config.output.save_images if save_images is None else save_images
    names = [image_name(f, root) for f in files]
    run = PredictRun.start(config, out, names, classes, weights, conf=conf, resume=resume, shard=shard)
    task, todo, report = run.task, run.todo, run.report
    console.print(f"predict: {counted(len(files), 'image')} from {root if isinstance(source, list) else source}"
                  + (f", {report.resumed} already done" if report.resumed else "")
                  + (f", shard {k}/{shards} ({len(todo)} to do)" if shards > 1 else "")
                  + (f", test-time augmentation: {describe(config.tta)}" if config.tta.enabled else "")
                  + f" → {out}")
    console.print(f"backend: {backend} ({why})")
    if report.conf is not None:
        console.print(f"conf: {report.conf:g} ({report.conf_source})")
    transform = build_augment(config.augment, "eval") if task.eval_transform else None
    loader = DataLoader(ImageFiles([files[i] for i in todo], transform), batch_size=config.eval.batch_size,
                        num_workers=min(loader_workers(config.train.workers), len(todo)), collate_fn=list,
                        pin_memory=device.type == "cuda")  # page-locked batches: to_device's copies run async
    start = time.perf_counter()
    # Drawing and encoding run on a writer thread (OpenCV releases the GIL) while the model works on the next
    # batch; a batch enters the journal only once its images are on disk, so --resume never skips a missing one.
    pending: deque[tuple[list[dict], list[Future]]] = deque()

    def settle(journal, keep: int) -> None:
        while len(pending) > keep:
            entries, futures = pending.popleft()
            for future in futures:
                future.result()
            journal.write("".join(json.dumps(e) + "\n" for e in entries))
            journal.flush()

    extra = task.prepare_predict(config, save_images)
    with run.open_journal() as journal, LoggedProgress(console) as progress, ThreadPoolExecutor(max_workers=1) as writer, \
            read_ahead(loader) as batches:
        bar = progress.add_task("predict", total=len(todo), info="")
        for batch in batches:
            job = PredictJob(config, device, classes, out, report.conf, save_images, writer.submit, extra=extra, root=root)
            entries, found = predict_items(task, model, [(names[todo[k]], image, error) for k, image, error in batch],
                                           job)
            report.counted += task.count(found)
            pending.append((entries, job.futures))
            settle(journal, keep=1)
            report.processed += len(found)
            progress.update(bar, advance=len(batch), info=f"{report.processed / (time.perf_counter() - start):.1f} img/s")
        settle(journal, keep=0)
    report.seconds = time.perf_counter() - start
    distributed.barrier(rank)  # every shard's journal is complete
    if rank.main:
        run.finish(save_images)
    distributed.teardown(rank)
    return report


def read_ahead(loader: DataLoader):
    """The loader's batches; without loader processes (2-core machines) the next batch decodes on a thread while
    the model works on this one (one batch ahead: a large image is held twice at most)."""
    return Prefetch(loader, depth=1) if loader.num_workers == 0 else contextlib.nullcontext(loader)


def journal_identity(config: PipelineConfig, classes: list[str], weights: Path | None) -> dict:
    """What makes a run's entries: a resume into a folder another of these wrote is refused (engine/journal.py)."""
    return {"pipeline": config.name, "task": config.task, "classes": list(classes),
            "weights": str(Path(weights).resolve()) if weights is not None else config.model.backbone.weights}


def predict_items(task: Task, model, items: list[tuple[str, torch.Tensor | None, str | None]],
                  job: PredictJob) -> tuple[list[dict], list[dict]]:
    """One batch: (name, image tensor or None, why it could not be read or None) → (every journal entry, the
    entries of the images the model saw). Shared by the local loop and the Ray actors (engine/predict_ray.py)."""
    skipped = [{"file": name, "skipped": error} for name, _, error in items if error is not None]
    kept = [(name, image) for name, image, error in items if error is None]
    found = task.predict(model, [image for _, image in kept], [name for name, _ in kept], job)
    return skipped + found, found


def write_outputs(out: Path, index: JournalIndex, names: list[str], classes: list[str], report: PredictReport,
                  task: Task) -> list[str]:
    """From the journals, in discovery order: the task's result files (`Task.write_results`) and skipped.txt.
    Returns the names written."""
    report.skipped = [(name, index.skipped[name]) for name in names if name in index.skipped]
    used = {"conf": {"value": report.conf, "source": report.conf_source}} if report.conf is not None else {}
    written = task.write_results(out, Finished(index, names), classes, used)
    write_skipped(out / "skipped.txt", (f"{name}: {reason}" for name, reason in report.skipped))
    return [*written, "skipped.txt"]
