"""`cvpipe predict --engine ray`: the same prediction as engine/predict.py, on a Ray cluster through Ray Data.

Ray Data reads the files (local paths, or any filesystem pyarrow reaches: `s3://`, `gs://`, `file://`), decodes
them (in tasks, which Ray Data fuses into the actors' processes where their resources agree) and runs the model
in a pool of actors: one per GPU, or `--actors` CPU actors. Each actor runs the pipeline's task on its batches exactly as a local run does (`predict_items`) and
writes the annotated images under `--out` itself, so `--out` (and `--weights`) must be on a filesystem every
node sees; the driver appends the entries to the journal as they arrive and writes the result files from it, as
a local run does, plus `results.parquet` (one row per image) for runs too big to read as one JSON file.

What Ray schedules is Ray's (autoscaling, retries, placement); what each image becomes stays cvpipe's, so a
run gives the same files as a local one and `--resume` skips what the journal has.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from cvpipe.config import PipelineConfig
from cvpipe.console import make_console
from cvpipe.data.augment import augment_image, build_augment
from cvpipe.data.samples import image_tensor
from cvpipe.engine.journal import JournalIndex
from cvpipe.engine.predict import PredictReport, PredictRun, predict_items
from cvpipe.engine.progress import LoggedProgress
from cvpipe.engine.runtime import inference_model
from cvpipe.errors import CvpipeError
from cvpipe.io.images import (
    IMAGE_SUFFIXES,
    PER_FILE_ERRORS,
    atomic_open,
    decode_image,
    discover,
    failure_reason,
    image_name,
)
from cvpipe.io.outputs import prepare_dir
from cvpipe.numbers import is_int
from cvpipe.ops.device import resolve_device
from cvpipe.tasks import get_task
from cvpipe.tasks.base import PredictJob

INSTALL = "pip install 'cvpipe[ray]'"


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the `data` extra of ray)
    except ImportError:
        raise CvpipeError(f"--engine ray needs Ray Data, which is not installed: {INSTALL}") from None
    return ray


def _listing(source: str, out: Path) -> tuple[list[str], str, object]:
    """(paths to read, in the order a local run discovers them; the folder their names are relative to; the
    pyarrow filesystem, or None for local paths)."""
    if "://" not in source:
        files, root = discover(source, exclude=out)
        return [str(f.resolve()) for f in files], str(Path(root).resolve()), None
    import pyarrow.fs

    try:
        filesystem, base = pyarrow.fs.FileSystem.from_uri(source)
        found = filesystem.get_file_info(pyarrow.fs.FileSelector(base, recursive=True))
    except (OSError, ValueError) as e:
        raise CvpipeError(f"--source {source}: cannot list it ({e})") from None
    paths = sorted(f.path for f in found if f.type == pyarrow.fs.FileType.File
                   and Path(f.path).suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CvpipeError(f"--source {source}: no images ({' '.join(sorted(IMAGE_SUFFIXES))}) under it")
    return paths, base, filesystem


def _decode(batch: dict, *, base: str, transform) -> dict:
    """Ray Data task: file bytes → uint8 HWC RGB (after the eval transform, where the task has one), or the reason
    it cannot be decoded."""
    images, errors, kept = [], [], []
    for data, path in zip(batch["bytes"], batch["path"]):
        name = image_name(path, base)
        try:
            image = decode_image(np.frombuffer(data, np.uint8), Path(name))
            images.append(augment_image(transform, image) if transform is not None else image)
            errors.append("")
        except PER_FILE_ERRORS as e:
            images.append(np.zeros((1, 1, 3), np.uint8))
            errors.append(failure_reason(name, e))
        kept.append(name)
    return {"name": np.array(kept, dtype=object), "image": images, "error": np.array(errors, dtype=object)}


class _Predictor:
    """Ray Data actor: the model loaded once, the task run on each batch as a local run does."""

    def __init__(self, config: PipelineConfig, weights: Path | None, backend: str, conf: float | None, out: Path,
                 save_images: bool, root: Path | None, threads: int):
        torch.set_num_threads(threads)
        self.device = resolve_device(config.train.device)
        self.model, self.classes, _, _ = inference_model(config, weights, self.device, backend)
        self.task = get_task(config.task)
        self.config, self.conf, self.out, self.save_images, self.root = config, conf, out, save_images, root
        self.extra = self.task.prepare_predict(config, save_images)
        self.writer = ThreadPoolExecutor(max_workers=1)  # PredictJob's writes are futures; each batch awaits its own

    def __call__(self, batch: dict) -> dict:
        items = [(name, None, error) if error else (name, image_tensor(image), None)
                 for name, image, error in zip(batch["name"], batch["image"], batch["error"])]
        job = PredictJob(self.config, self.device, self.classes, self.out, self.conf, self.save_images,
                         self.writer.submit, extra=self.extra, root=self.root)
        entries, _ = predict_items(self.task, self.model, items, job)
        for future in job.futures:  # the images are on disk before their entries reach the journal
            future.result()
        return {"entry": np.array([json.dumps(e) for e in entries], dtype=object)}


def _split_address(address: str | None) -> tuple[str, str]:
    """(host, port) of --address HOST:PORT; ("", "") for None and auto. Anything else is refused before Ray starts."""
    if address is None or address == "auto":
        return "", ""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not is_int(port, 0, 65535):
        raise CvpipeError(f"--address {address}: expected auto or HOST:PORT with a port from 0 to 65535, e.g. "
                          "127.0.0.1:6379")
    return host, port


def _check_reachable(address: str | None) -> None:
    """A HOST:PORT that nothing listens on fails in seconds here; Ray itself retries it for minutes."""
    host, port = _split_address(address)
    if not host:
        return  # None (a Ray of this run's own) or "auto": Ray answers those at once
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise CvpipeError(f"--address {address}: cannot reach a Ray cluster there ({e.strerror or e}); start one "
                          "with `ray start --head` (then `ray start --address HEAD:6379` on each other machine), or "
                          "leave --address out to run Ray on this machine") from None


def _quiet(ray) -> None:
    """Ray Data's own progress bars and error logs off: the run prints its progress, and a failure once."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = context.print_on_execution_start = context.log_internal_stack_trace = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _cause(ray, error: BaseException) -> CvpipeError:
    """The cvpipe error a failure on the cluster carries (an actor that could not load the model, a full disk),
    else one naming Ray's error."""
    seen, current = set(), error
    while current is not None and id(current) not in seen:
        if isinstance(current, CvpipeError) and not isinstance(current, ray.exceptions.RayError):
            return current  # (Ray's wrapper is also an instance of the cause's class, with its traceback in str)
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return CvpipeError(f"the Ray job failed: {first}; the workers' logs are under the cluster's session folder "
                       "(/tmp/ray/session_latest/logs by default)")


def _pool(ray, actors: int | None) -> tuple[int, dict]:
    """(actors, each actor's resources): one per GPU of the cluster, else `actors` CPU actors (default: the
    cluster's CPUs less one, left to decoding), with the CPUs shared out among them."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if gpus and actors is None:
        return gpus, {"num_gpus": 1}
    count = actors or max(1, cpus - 1)
    return count, {"num_cpus": max(1, (cpus - 1) // count) if cpus > count else 1}


def predict_on_ray(config: PipelineConfig, source: str | Path, out: Path, weights: Path | None, *,
                   conf: float | str | None = None, resume: bool = False, save_images: bool | None = None,
                   backend: str = "auto", address: str | None = None, actors: int | None = None,
                   console: Console | None = None) -> PredictReport:
    """`address`: a running cluster (`auto`, `HOST:PORT`, `ray://HOST:PORT`); None starts Ray on this machine
    for the run. The driver loads the model once too, so that a bad checkpoint or backend fails here, with the
    same message as a local run, before the cluster does any work."""
    _split_address(address)
    ray = _ray()
    if actors is not None and actors < 1:
        raise CvpipeError(f"--actors {actors}: expected 1 or more")
    console = console or make_console()
    paths, base, filesystem = _listing(str(source), Path(out).resolve())  # a bad --source leaves no --out
    out = prepare_dir(out, "--out").resolve()  # the actors' working folders are not this one
    weights = Path(weights).resolve() if weights is not None else None
    names = [image_name(path, base) for path in paths]
    root = None if filesystem is not None else Path(base)  # where the tasks read files' own metadata (GeoTIFF)
    save_images = config.output.save_images if save_images is None else save_images
    _, classes, backend_used, why = inference_model(config, weights, torch.device("cpu"), backend)
    run = PredictRun.start(config, out, names, classes, weights, conf=conf, resume=resume)
    todo, report = run.todo, run.report
    _quiet(ray)
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False,
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or "this machine"
        raise CvpipeError(f"--address {where}: cannot reach a Ray cluster ({str(e).splitlines()[0][:200]}); start "
                          "one with `ray start --head`, or leave --address out to run Ray on this machine") from None
    try:
        count, resources = _pool(ray, actors)
        console.print(f"predict on Ray: {len(names)} images from {source}"
                      + (f", {report.resumed} already done" if report.resumed else "")
                      + f", {count} actor(s) × {resources} on {ray.cluster_resources().get('CPU', 0):g} CPUs, "
                      f"{ray.cluster_resources().get('GPU', 0):g} GPUs → {out}")
        console.print(f"backend: {backend_used} ({why})" + (", on the CPU; each actor picks for its device"
                                                            if backend == "auto" else ""))
        if report.conf is not None:
            console.print(f"conf: {report.conf:g} ({report.conf_source})")
        start = time.perf_counter()
        if todo:
            try:
                # the backend as asked: with auto, each actor picks for its own device (a GPU actor's is not the CPU's)
                actor = {"config": config, "weights": weights, "backend": backend, "conf": report.conf,
                         "out": out, "save_images": save_images, "root": root}
                results = _dataset(ray, config, [paths[i] for i in todo], base, filesystem, actor, count, resources)
                _collect(results, run, console)
            except Exception as e:  # Ray wraps what failed on the cluster; a cvpipe error in it says what to do
                raise _cause(ray, e) from None
        report.seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    index = run.finish(save_images)
    report.written.append(_write_parquet(out / "results.parquet", index, names))
    return report


def _dataset(ray, config: PipelineConfig, paths: list[str], base: str, filesystem, actor: dict, count: int,
             resources: dict):
    """The Ray Data pipeline: read → decode → the model actors, giving one `entry` (JSON) per image."""
    task = get_task(config.task)
    transform = build_augment(config.augment, "eval") if task.eval_transform else None
    # reading is I/O: at no CPU, so the reads run beside actors that hold every CPU (Ray Data's backpressure bounds
    # how far they run ahead); decoding is fused into the actors' CPU where their resources agree
    with warnings.catch_warnings():  # Ray 2.60 deprecates ray_remote_args, but its named num_cpus=0 means "unset"
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        data = ray.data.read_binary_files(paths, include_paths=True, filesystem=filesystem,
                                          ray_remote_args={"num_cpus": 0})
    decoded = data.map_batches(_decode, fn_kwargs={"base": base, "transform": transform}, batch_format="numpy")
    return decoded.map_batches(_Predictor, batch_size=config.eval.batch_size, batch_format="numpy",
                               concurrency=count, fn_constructor_kwargs={**actor, "threads": resources.get("num_cpus", 1)},
                               **resources)


def _collect(results, run: PredictRun, console: Console) -> None:
    """The entries as they arrive: appended to the journal (so a killed driver resumes), counted, shown."""
    start = time.perf_counter()
    report, task = run.report, run.task
    with run.open_journal() as journal, LoggedProgress(console) as progress:
        bar = progress.add_task("predict", total=len(run.todo), info="")
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            lines = list(batch["entry"])
            journal.write("".join(line + "\n" for line in lines))
            journal.flush()
            found = [e for e in map(json.loads, lines) if "skipped" not in e]
            report.processed += len(found)
            report.counted += task.count(found)
            progress.update(bar, advance=len(lines),
                            info=f"{report.processed / (time.perf_counter() - start):.1f} img/s")


PARQUET_ROWS = 65536  # rows per row group: how many entries the driver holds at once while writing the file


def _write_parquet(path: Path, index: JournalIndex, names: list[str]) -> str:
    """One row per image in discovery order: file, the reason it was skipped (or null), its result as JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("file", pa.string()), ("skipped", pa.string()), ("result", pa.string())])
    entries = ((name, entry) for name, entry in index.entries(names) if entry is not None)
    with atomic_open(path, "wb") as f, pq.ParquetWriter(f, schema) as writer:
        while rows := list(itertools.islice(entries, PARQUET_ROWS)):
            writer.write_table(pa.table({"file": [name for name, _ in rows],
                                         "skipped": [entry.get("skipped") for _, entry in rows],
                                         "result": [json.dumps(entry) for _, entry in rows]}, schema=schema))
    return path.name
