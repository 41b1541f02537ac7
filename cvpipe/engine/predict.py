"""`cvpipe predict`: batched inference over a folder, file or glob, written out as it goes.

Decoding runs in loader workers; an unreadable file is reported in `skipped.txt` and the run goes on.
Every finished image is appended to a journal (`.journal.jsonl`), so `--resume` skips what is done and the
final files (`results.json` COCO results, `images.json`, `detections.csv`; for classification
`predictions.csv`; for segmentation `segmentation.csv`, beside the label PNGs) are rebuilt from the journal.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader

from cvpipe.config import PipelineConfig, loader_workers
from cvpipe.console import make_console
from cvpipe.data.augment import augment_image, build_augment
from cvpipe.engine import distributed
from cvpipe.engine.data import image_tensor
from cvpipe.engine.device import resolve_device
from cvpipe.engine.inference import classify, segment, stylize
from cvpipe.engine.journal import journal_paths, open_journal, read_journals
from cvpipe.engine.progress import LoggedProgress
from cvpipe.engine.runtime import inference_model
from cvpipe.engine.tta import describe, detect_pipeline
from cvpipe.errors import CvpipeError
from cvpipe.io.images import PER_FILE_ERRORS, discover, failure_reason, read_image, write_image, write_text
from cvpipe.io.outputs import prepare_dir
from cvpipe.metrics.coco import detections_to_results
from cvpipe.viz.draw import draw_sample, overlay_mask

TOP_K = 5  # classes per image in a classification's predictions.csv


@dataclass
class PredictReport:
    out: Path
    processed: int  # in this run
    resumed: int  # already done by an earlier run
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason), all runs
    seconds: float = 0.0
    detections: int = 0
    written: list[str] = field(default_factory=list)  # what this run wrote under `out`, for the summary line

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


def predict(config: PipelineConfig, source: str | Path, out: Path, weights: Path | None, *, conf: float = 0.25,
            resume: bool = False, save_images: bool | None = None, backend: str = "pytorch",
            shard: tuple[int, int] | None = None, console: Console | None = None) -> PredictReport:
    """`shard=(k, n)`: only every n-th image from the k-th, into its own journal; the result files are written
    from the journals of all n shards found in `out`. Under torchrun the shard is the process's rank, and rank 0
    writes the result files once every rank has finished."""
    rank = distributed.setup(config.train.device)
    if shard is None:
        shard = (rank.rank, rank.world)
    elif rank.distributed:
        raise CvpipeError("--shard: under torchrun each process takes its rank's shard; leave --shard out")
    k, shards = shard
    if not 0 <= k < shards:
        raise CvpipeError(f"--shard {k}/{shards}: expected K/N with 0 ≤ K < N")
    console = console if rank.main and console is not None else make_console(quiet=not rank.main)
    out = prepare_dir(out, "--out")  # before the model loads: a bad --out fails in a second
    device = distributed.device_for(rank, resolve_device(config.train.device))
    files, root = discover(source, exclude=out)
    model, classes = inference_model(config, weights, device, backend)
    save_images = config.output.save_images if save_images is None else save_images
    journals = journal_paths(out, shards)
    journal_path = journals[k]
    done = read_journals(journals) if resume else {}
    names = [str(f.relative_to(root)) if f.is_relative_to(root) else f.name for f in files]
    todo = [i for i, name in enumerate(names) if i % shards == k and name not in done]
    report = PredictReport(out, 0, len(done))
    console.print(f"predict: {len(files)} images from {source}" + (f", {len(done)} already done" if done else "")
                  + (f", shard {k}/{shards} ({len(todo)} to do)" if shards > 1 else "")
                  + (f", test-time augmentation: {describe(config.tta)}" if config.tta.enabled else "")
                  + f" → {out}")
    transform = build_augment(config.augment, "eval") if config.task != "detect" else None  # detectors resize themselves
    style = read_image(Path(config.model.head.style_image)) if config.task == "stylize" and save_images else None
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

    with (open_journal(journal_path, resume=resume) as journal, LoggedProgress(console) as progress,
          ThreadPoolExecutor(max_workers=1) as writer):
        task = progress.add_task("predict", total=len(todo), info="")
        for batch in loader:
            entries, images, kept = [], [], []
            for k, image, error in batch:
                name = names[todo[k]]
                if error is not None:
                    entries.append({"file": name, "skipped": error})
                else:
                    images.append(image)
                    kept.append(name)
            futures: list[Future] = []
            amp = config.train.amp
            if config.task == "classify":
                entries += _top_classes(model, images, kept, device, amp)
            elif config.task == "segment":
                entries += _segment(model, images, kept, device, amp, out, writer, futures, save_images)
            elif config.task == "stylize":
                entries += _stylize(model, images, kept, device, amp, out, writer, futures, style)
            else:
                found = _detections(model, images, kept, device, config, conf, classes, out, writer, futures, save_images)
                report.detections += sum(len(entry["boxes"]) for entry in found)
                entries += found
            pending.append((entries, futures))
            settle(journal, keep=1)
            report.processed += len(kept)
            progress.update(task, advance=len(batch), info=f"{report.processed / (time.perf_counter() - start):.1f} img/s")
        settle(journal, keep=0)
    report.seconds = time.perf_counter() - start
    distributed.barrier(rank)  # every shard's journal is complete
    if rank.main:
        report.written = image_folders(config.task, save_images) + write_outputs(
            out, read_journals(journals), names, classes, report, task=config.task)
    distributed.teardown(rank)
    return report


def image_folders(task: str, save_images: bool) -> list[str]:
    """The folders of per-image files a task writes (with `save_images`, its annotated copies too)."""
    drawn = {"detect": ["images/"], "segment": ["overlays/"]}.get(task, []) if save_images else []
    return {"segment": ["masks/"], "stylize": ["stylized/"]}.get(task, []) + drawn


def _detections(model, images: list[torch.Tensor], names: list[str], device, config: PipelineConfig, conf: float,
                classes: list[str], out: Path, writer, futures: list[Future], save_images: bool) -> list[dict]:
    """Boxes scoring at least `conf` (with the pipeline's test-time augmentation where enabled); annotated copies
    under images/ written on the writer thread."""
    entries = []
    found = detect_pipeline(model, images, device, config, augment=True) if images else []
    for name, image, det in zip(names, images, found):
        keep = det["scores"] >= conf
        boxes, scores, labels = det["boxes"][keep].numpy(), det["scores"][keep].numpy(), det["labels"][keep].numpy()
        if save_images:
            futures.append(writer.submit(_write_annotated, out / "images" / name, image, boxes, labels, classes, scores))
        entries.append({"file": name, "width": int(image.shape[2]), "height": int(image.shape[1]),
                        "boxes": np.round(boxes.astype(np.float64), 2).tolist(),
                        "scores": np.round(scores.astype(np.float64), 5).tolist(), "labels": labels.tolist()})
    return entries


def _top_classes(model, images: list[torch.Tensor], names: list[str], device, amp: bool) -> list[dict]:
    if not images:
        return []
    probabilities = classify(model, images, device, amp=amp)
    scores, labels = probabilities.topk(min(TOP_K, probabilities.shape[1]), dim=1)
    return [{"file": name, "labels": label.tolist(), "scores": np.round(score.numpy().astype(np.float64), 5).tolist()}
            for name, label, score in zip(names, labels, scores)]


def _segment(model, images: list[torch.Tensor], names: list[str], device, amp: bool, out: Path, writer,
             futures: list[Future], save_images: bool) -> list[dict]:
    """Label PNGs (class index per pixel) under masks/, colour overlays under overlays/, pixel counts per class."""
    entries = []
    for name, image, mask in zip(names, images, segment(model, images, device, amp=amp) if images else []):
        labels = mask.numpy()
        stem = Path(name).with_suffix(".png")
        futures.append(writer.submit(write_image, out / "masks" / stem, labels))
        if save_images:
            futures.append(writer.submit(_write_overlay, out / "overlays" / stem, image, labels))
        entries.append({"file": name, "pixels": np.bincount(labels.ravel()).tolist()})
    return entries


def _stylize(model, images: list[torch.Tensor], names: list[str], device, amp: bool, out: Path, writer,
             futures: list[Future], style: np.ndarray | None) -> list[dict]:
    """Stylized copies under stylized/ (same relative names, PNG), and content | style | result beside them when
    the style image is given."""
    from cvpipe.engine.stylize import side_by_side

    entries = []
    for name, image, pixels in zip(names, images, stylize(model, images, device, amp=amp)):
        output = Path("stylized") / Path(name).with_suffix(".png")
        futures.append(writer.submit(write_image, out / output, pixels))
        if style is not None:
            content = image.permute(1, 2, 0).numpy()
            futures.append(writer.submit(write_image, out / output.with_name(f"{output.stem}_side_by_side.png"),
                                         side_by_side(content, style, pixels)))
        entries.append({"file": name, "output": str(output)})
    return entries


def _write_overlay(path: Path, image: torch.Tensor, labels: np.ndarray) -> None:
    write_image(path, overlay_mask(image.permute(1, 2, 0).numpy(), labels))


def _write_annotated(path: Path, image: torch.Tensor, boxes, labels, classes: list[str], scores) -> None:
    write_image(path, draw_sample(image.permute(1, 2, 0).numpy(), boxes, labels, classes, scores=scores))


def write_outputs(out: Path, entries: dict[str, dict], names: list[str], classes: list[str], report: PredictReport,
                  *, task: str = "detect") -> list[str]:
    """From the journal, in discovery order: the task's files (detection: results.json COCO results, images.json
    ids → files, detections.csv; classification: predictions.csv; segmentation: segmentation.csv; style
    transfer: none beyond its images) and skipped.txt. Returns the names written."""
    finished = []  # (image id, name, entry)
    for image_id, name in enumerate(names, start=1):
        entry = entries.get(name)
        if entry is None:
            continue
        if "skipped" in entry:
            report.skipped.append((name, entry["skipped"]))
        else:
            finished.append((image_id, name, entry))
    writers = {"detect": _write_detections, "classify": _write_classifications, "segment": _write_segmentations}
    written = writers[task](out, finished, classes) if task in writers else []
    write_text(out / "skipped.txt", "".join(f"{name}: {reason}\n" for name, reason in report.skipped))
    return [*written, "skipped.txt"]


def _write_detections(out: Path, finished: list[tuple[int, str, dict]], classes: list[str]) -> list[str]:
    images, results = [], []
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["file", "class", "score", "x1", "y1", "x2", "y2"])
    for image_id, name, entry in finished:
        images.append({"id": image_id, "file_name": name, "width": entry["width"], "height": entry["height"]})
        results += detections_to_results([entry], [image_id])
        for (x1, y1, x2, y2), score, label in zip(entry["boxes"], entry["scores"], entry["labels"]):
            writer.writerow([name, classes[label], score, x1, y1, x2, y2])
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    write_text(out / "results.json", json.dumps(results))
    write_text(out / "images.json", json.dumps({"images": images, "categories": categories}))
    write_text(out / "detections.csv", rows.getvalue())
    return ["results.json (COCO results)", "images.json", "detections.csv"]


def _write_classifications(out: Path, finished: list[tuple[int, str, dict]], classes: list[str]) -> list[str]:
    rows = io.StringIO()
    writer = csv.writer(rows)
    k = min(TOP_K, len(classes))
    writer.writerow(["file", *(f"{field}{i}" for i in range(1, k + 1) for field in ("class", "score"))])
    for _, name, entry in finished:
        writer.writerow([name, *(v for label, score in zip(entry["labels"], entry["scores"])
                                 for v in (classes[label], score))])
    write_text(out / "predictions.csv", rows.getvalue())
    return [f"predictions.csv (top-{k} classes and scores)"]


def _write_segmentations(out: Path, finished: list[tuple[int, str, dict]], classes: list[str]) -> list[str]:
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["file", "mask", *classes])  # the share of the image's pixels given to each class
    for _, name, entry in finished:
        counts = np.zeros(len(classes))
        counts[: len(entry["pixels"])] = entry["pixels"][: len(classes)]
        shares = counts / max(counts.sum(), 1)
        writer.writerow([name, str(Path("masks") / Path(name).with_suffix(".png")), *np.round(shares, 5).tolist()])
    write_text(out / "segmentation.csv", rows.getvalue())
    return ["segmentation.csv (class shares)"]
