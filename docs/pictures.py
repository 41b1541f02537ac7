"""The docs site's pictures, made from real runs of the cvpipe commands (`make pictures`), never drawn by hand.

`python docs/pictures.py [DEMO_RUN] [STEP ...]` reads what `make demo` left in DEMO_RUN (default runs/demo: the evaluation's
plots and report, the annotated val image), runs the rest itself under runs/pictures/ (the COCO SSD on the sample
photos and on the street video, short FCN and Mask R-CNN fine-tunes on the nuclei, Gatys style transfer, an
augmentation preview, the live page in headless Chromium) and writes the pictures to docs/img/. Each step prints
the command it runs; one that fails stops the script with its output. STEP names some of the steps (augment,
coco, label, video, live, style, nuclei, demo, site) to make only their pictures again; `site` screenshots the built
site's quickstart and a task page, last, so that they show the new pictures.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMG = REPO / "docs" / "img"
WORK = REPO / "runs" / "pictures"
BIN = Path(sys.executable).parent
PHOTOS = ("astronaut.png", "motorcycle_left.png", "chelsea.png", "coffee.png")


def cvpipe(*args: str) -> None:
    print("+ cvpipe", " ".join(args), flush=True)
    done = subprocess.run([str(BIN / "cvpipe"), *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"cvpipe {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def latest(pattern: str) -> Path:
    found = sorted(WORK.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit(f"nothing matches {WORK / pattern}")
    return found[-1]


def row(images: list[np.ndarray], height: int, gap: int = 6) -> np.ndarray:
    """Images side by side at one height, white gaps between them."""
    scaled = [cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height), interpolation=cv2.INTER_AREA)
              for im in images]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    return np.hstack([part for im in scaled for part in (im, spacer)][:-1])


def save(name: str, image: np.ndarray) -> None:
    path = IMG / name
    params = [cv2.IMWRITE_JPEG_QUALITY, 88] if path.suffix == ".jpg" else []
    cv2.imwrite(str(path), image, params)
    print(f"  wrote {path.relative_to(REPO)} ({image.shape[1]}×{image.shape[0]})")


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        sys.exit(f"cannot read {path}")
    return image


def demo_pictures(demo: Path) -> None:
    """make demo's evaluation plots and report, and a corner of its annotated val image."""
    evaluation = demo / "eval"
    for name in ("f1_curve.png", "confusion_matrix.png", "errors.png", "pr_curve.png"):
        shutil.copyfile(evaluation / name, IMG / f"eval_{name}")
        print(f"  wrote docs/img/eval_{name}")
    screenshot((evaluation / "report.html").as_uri(), IMG / "eval_report.png", (1000, 760))
    annotated = read(next((demo / "predict" / "images").iterdir()))
    save("predict_treecrowns.jpg", annotated[:900, :1400])


def coco_pictures() -> None:
    cvpipe("data", "fetch", "photos")
    cvpipe("weights", "fetch", "ssd_mobilenet_v2.coco")
    out = WORK / "coco"
    cvpipe("predict", "coco_ssd_mobilenet_v2", "--source", "data/photos", "--out", str(out))
    save("predict_coco.jpg", row([read(out / "images" / name) for name in PHOTOS], 300))


def label_audit_picture() -> None:
    """`cvpipe label audit`'s page: the COCO SSD's confident detections of the photos as labels, half of them made
    wrong (data.synthetic.corrupt_labels), audited with the same model."""
    from cvpipe.data.formats import read_dataset, write_dataset
    from cvpipe.data.synthetic import corrupt_labels

    cvpipe("data", "fetch", "photos")
    cvpipe("weights", "fetch", "ssd_mobilenet_v2.coco")
    out = WORK / "label"
    shutil.rmtree(out, ignore_errors=True)
    cvpipe("label", "export", "coco_ssd_mobilenet_v2", "--source", "data/photos", "--out", str(out / "pre"),
           "--format", "coco", "--conf", "0.5")
    labels = read_dataset(out / "pre" / "coco", "coco", "train")
    corrupted, _ = corrupt_labels(labels, 0.5, seed=0)
    write_dataset(corrupted, out / "labeled", "coco", "train")
    cvpipe("label", "audit", "coco_ssd_mobilenet_v2", "--set", f"data.root={out / 'labeled'}", "data.format=coco",
           "data.train=train", "--out", str(out / "audit"), "--conf", "0.5")
    screenshot((out / "audit" / "audit.html").as_uri(), IMG / "label_audit.png", (1100, 900))


def augment_picture() -> None:
    cvpipe("data", "fetch", "treecrowns")
    cvpipe("augment", "preview", "treecrowns_faster_rcnn", "--n", "8", "--out", str(IMG / "augment_preview.png"))


def video_pictures() -> None:
    cvpipe("data", "fetch", "videos")
    out = WORK / "video" / "bikes.mp4"
    cvpipe("video", "coco_ssd_mobilenet_v2", "--source", "data/videos/bikes.mp4", "--out", str(out), "--max-frames",
           "120", "--set", "video.track=true", "video.lines={middle: [[0.5, 0], [0.5, 1]]}")
    capture = cv2.VideoCapture(str(out))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 110)
    ok, frame = capture.read()
    if not ok:
        sys.exit(f"cannot read frame 110 of {out}")
    save("video_tracks.jpg", frame)


def live_view() -> None:
    """The --serve page of the same footage, as headless Chromium shows it a few seconds in."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(BIN / "cvpipe"), "video", "coco_ssd_mobilenet_v2", "--source", "data/videos/bikes.mp4", "--out",
               str(WORK / "live" / "bikes.mp4"), "--serve", str(port), "--duration", "30", "--set", "video.track=true",
               "video.lines={middle: [[0.5, 0], [0.5, 1]]}"]
    print("+", " ".join(command[1:]), flush=True)
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(300):
            try:
                if b'"fps"' in urllib.request.urlopen(url + "stats.json", timeout=2).read():
                    break
            except OSError:
                pass
            time.sleep(0.2)
        time.sleep(6)  # a few seconds of footage, so that tracks and the line count have started
        screenshot(url, IMG / "live_view.png", (900, 600))
    finally:
        run.terminate()
        run.wait(timeout=60)


def nuclei_pictures() -> None:
    """Short fine-tunes of the FCN and Mask R-CNN nuclei pipelines, their predictions on the held-out quarter."""
    cvpipe("data", "fetch", "nuclei-tiles")
    cvpipe("data", "fetch", "nuclei")
    cvpipe("weights", "fetch", "mobilenet_v2.imagenet")
    for pipeline, minutes in (("nuclei_fcn", "1"), ("nuclei_mask_rcnn", "2")):
        cvpipe("train", pipeline, "--set", f"output.dir={WORK}", f"train.time_limit={minutes}")
    fcn, mask_rcnn = latest("nuclei_fcn*/best.pt"), latest("nuclei_mask_rcnn*/best.pt")
    cvpipe("predict", "nuclei_fcn", "--weights", str(fcn), "--source", "data/nuclei-tiles/val/images", "--out",
           str(WORK / "fcn"))
    tiles = sorted((WORK / "fcn" / "overlays").glob("*.png"))
    save("fcn_overlay.png", row([read(tile) for tile in tiles], 256))
    cvpipe("predict", "nuclei_mask_rcnn", "--weights", str(mask_rcnn), "--source", "data/nuclei/val", "--out",
           str(WORK / "mask_rcnn"))
    overlay = read(next((WORK / "mask_rcnn" / "images").iterdir()))  # the 128×512 quarter: four squares in a row
    squares = [overlay[top:top + overlay.shape[1]] for top in range(0, overlay.shape[0], overlay.shape[1])]
    save("mask_rcnn_overlay.png", row(squares, 2 * overlay.shape[1]))
    print("+ python benches/semantic_vs_instance.py", flush=True)
    subprocess.run([sys.executable, "benches/semantic_vs_instance.py", "--fcn", str(fcn), "--mask-rcnn",
                    str(mask_rcnn), "--picture-only"], cwd=REPO, check=True, capture_output=True)


def style_picture() -> None:
    cvpipe("weights", "fetch", "vgg16_hed.bsds")
    out = WORK / "style"
    cvpipe("stylize", "--content", "data/photos/chelsea.png", "--style", "data/photos/coffee.png", "--out", str(out),
           "--size", "256", "--steps", "100")
    save("style_side_by_side.jpg", read(out / "chelsea_side_by_side.png"))


def site_pictures() -> None:
    """The built site itself, in headless Chromium: the predict quickstart and the instance task page."""
    site = WORK / "site"
    print("+ mkdocs build --strict", flush=True)
    subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)], cwd=REPO, check=True,
                   capture_output=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    for page, name in (("quickstart/predict", "site_quickstart.png"), ("tasks/instance", "site_task.png")):
        screenshot((site / page / "index.html").as_uri(), IMG / name, (1280, 1500))


def screenshot(url: str, path: Path, size: tuple[int, int]) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs a headless Chromium (Debian package chromium) for the page screenshots")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size[0]},{size[1]}", "--timeout=4000", f"--screenshot={path}", url],
                   capture_output=True, timeout=120, check=True)
    print(f"  wrote {path.relative_to(REPO)} (screenshot of {url})")


def main() -> None:
    args = sys.argv[1:]
    demo = (Path(args.pop(0)) if args and args[0] not in STEPS else REPO / "runs" / "demo").resolve()
    steps = {**STEPS, "demo": lambda: demo_pictures(demo)}
    unknown = [name for name in args if name not in steps]
    if unknown:
        sys.exit(f"unknown step {unknown[0]!r}; the steps: {', '.join(steps)}")
    IMG.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    for name, step in steps.items():
        if not args or name in args:
            step()


# in this order; "demo" is filled in by main() with the run folder
STEPS = {"augment": augment_picture, "coco": coco_pictures, "label": label_audit_picture, "video": video_pictures,
         "live": live_view,
         "style": style_picture, "nuclei": nuclei_pictures, "demo": None, "site": site_pictures}

if __name__ == "__main__":
    main()
