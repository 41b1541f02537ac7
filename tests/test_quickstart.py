"""The quickstarts and the README's journeys, run as written from an empty folder.

Each page's ```bash blocks are read in order and every command runs through the installed `cvpipe` in a fresh
folder holding only what a user brings (`my_photos/`, `my_data/`, ...), with no `CVPIPE_*` set: fetched data and
weights come from the per-user cache, as they would for a user (the cache points at this checkout's fetched
files so nothing is downloaded twice). YAML blocks that name their file on their first line (`# my_detector.yaml`)
are saved under that name, as the page asks the reader to. Only the budgets are cut: training runs one epoch and
video a few frames. Installing, and cameras the test machine lacks, are the only commands not run, and they are
listed here by hand so that a new command on a page cannot go untested.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CVPIPE = Path(sys.executable).with_name("cvpipe")
PAGES = ["README.md", "docs/quickstart/predict.md", "docs/quickstart/finetune.md", "docs/quickstart/video.md"]
README_JOURNEYS = ("## Three journeys", "\n## ")  # the README's part that is a walk-through

# installing is what puts this interpreter's `cvpipe` on PATH: done before any test runs
INSTALL_STEPS = {"python3", "source", "pip"}
# a webcam and RTSP cameras: not on a test machine (tests/test_live_video.py reads a real RTSP server)
CAMERAS = ("0", "rtsp://")
# the budget cut, added to the page's command (a served page is ended by Ctrl-C instead)
SHORT = {"train": ["--no-tensorboard", "--set", "train.time_limit=null", "train.epochs=1"],
         "video": ["--max-frames", "3"]}


def walkthrough(page: str) -> str:
    text = (REPO / page).read_text()
    if page == "README.md":
        start = text.index(README_JOURNEYS[0])
        text = text[start: text.index(README_JOURNEYS[1], start + 1)]
    return text


def steps(page: str) -> list[tuple[str, object]]:
    """("run", argv) and ("file", (name, text)) in page order. `\\` continuations are joined, comments dropped and
    `a && b` split, as a shell would."""
    found = []
    for kind, body in re.findall(r"```(bash|yaml)\n(.*?)```", walkthrough(page), flags=re.S):
        if kind == "yaml":
            named = re.match(r"# (\S+\.yaml)\n", body)
            if named:
                found.append(("file", (named.group(1), body)))
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                found.append(("run", words[:cut]))
                words = words[cut + 1:]
    return found


def is_install(argv: list[str]) -> bool:
    return argv[0] in INSTALL_STEPS


def needs_a_camera(argv: list[str]) -> bool:
    if "--source" not in argv:
        return False
    sources = argv[argv.index("--source") + 1:]
    sources = sources[: next((i for i, w in enumerate(sources) if w.startswith("--")), len(sources))]
    return any(s == CAMERAS[0] or s.startswith(CAMERAS[1]) for s in sources)


def shortened(argv: list[str]) -> list[str]:
    if "--serve" in argv:  # a page runs until Ctrl-C, which run_served sends once it answers
        return argv
    extra = SHORT.get(argv[1], [])
    if "--set" in extra and "--set" in argv:  # one --set takes every KEY=VALUE: add ours after the page's
        at = argv.index("--set") + 1
        while at < len(argv) and not argv[at].startswith("--"):
            at += 1
        ours = extra[extra.index("--set") + 1:]
        return argv[:at] + ours + argv[at:] + extra[: extra.index("--set")]
    return argv + extra


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def user_folder(tmp_path_factory):
    """An empty folder with what a user brings, and an environment with no CVPIPE_* whose per-user cache holds
    the suite's fetched data and weights (the pages' own `fetch` commands find them there, or add to them)."""
    from cvpipe.data.fetchers import fetch_dataset

    repo_data, repo_weights = Path(os.environ["CVPIPE_DATA"]), Path(os.environ["CVPIPE_WEIGHTS"])
    for name in ("photos", "sample"):
        fetch_dataset(name, repo_data)
    home = tmp_path_factory.mktemp("home")
    (home / ".cache" / "cvpipe").mkdir(parents=True)
    (home / ".cache" / "cvpipe" / "data").symlink_to(repo_data)
    (home / ".cache" / "cvpipe" / "weights").symlink_to(repo_weights)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVPIPE_") and k != "XDG_CACHE_HOME"}
    env |= {"HOME": str(home), "PATH": f"{CVPIPE.parent}{os.pathsep}{env.get('PATH', '')}"}

    folder = tmp_path_factory.mktemp("user")
    photos = sorted((repo_data / "photos").glob("*.png"))[:3]
    for into in ("my_photos", "new_images", "shots/day1"):
        (folder / into).mkdir(parents=True)
        for photo in photos:
            shutil.copy(photo, folder / into / (photo.stem + (".jpg" if into.startswith("shots") else photo.suffix)))
    for shot in (folder / "shots" / "day1").glob("*.jpg"):  # a glob's files, really JPEG
        import cv2

        cv2.imwrite(str(shot), cv2.imread(str(repo_data / "photos" / (shot.stem + ".png"))))
    shutil.copytree(repo_data / "sample" / "coco", folder / "my_data")
    shutil.copytree(repo_data / "sample" / "voc", folder / "my_voc")
    return folder, env


def run_served(argv: list[str], folder: Path, env: dict) -> None:
    """A `--serve PORT` command on a free port: the page answers and shows frames, then Ctrl-C ends it cleanly."""
    port = free_port()
    at = argv.index("--serve") + 1
    argv = [*argv[:at], str(port), *argv[at + 1:]]
    proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, page = time.monotonic() + 120, None
        while page is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None and "<html" in page.lower(), f"{shlex.join(argv)}: no page on port {port}"
        while time.monotonic() < deadline and proc.poll() is None:  # Ctrl-C once frames flow, as a viewer would
            try:
                if b'"fps"' in urllib.request.urlopen(f"http://127.0.0.1:{port}/stats.json", timeout=5).read():
                    break
            except OSError:  # the run ended (the assertion below says how) or is busy: ask again
                pass
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130) and "Traceback" not in err, f"{shlex.join(argv)}\n{out}\n{err}"


@pytest.mark.assets
@pytest.mark.parametrize("page", PAGES)
def test_every_command_of_the_page_works_from_an_empty_folder(page, user_folder):
    folder, env = user_folder
    ran = 0
    for kind, step in steps(page):
        if kind == "file":
            name, text = step
            (folder / name).write_text(text)
            continue
        argv = step
        if is_install(argv) or needs_a_camera(argv):
            continue
        assert argv[0] == "cvpipe", f"{page}: `{shlex.join(argv)}` is neither cvpipe nor an install step"
        argv = shortened(argv)
        began = time.monotonic()
        if "--serve" in argv:
            run_served(argv, folder, env)
        else:
            done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0 and "Traceback" not in done.stderr, \
                f"{page}: `{shlex.join(argv)}` exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        ran += 1
        print(f"{time.monotonic() - began:6.1f} s  {shlex.join(argv)}")
    assert ran >= 3, f"{page}: only {ran} commands found"


def test_the_page_reader_splits_as_a_shell_would():
    assert steps.__doc__ and shortened(["cvpipe", "train", "x.yaml", "--set", "train.lr=0.1", "--resume"]) == [
        "cvpipe", "train", "x.yaml", "--set", "train.lr=0.1", "train.time_limit=null", "train.epochs=1",
        "--resume", "--no-tensorboard"]
    assert shortened(["cvpipe", "video", "p", "--source", "a.mp4"])[-2:] == ["--max-frames", "3"]
    assert needs_a_camera(["cvpipe", "video", "p", "--source", "rtsp://a/s", "rtsp://b/s", "--serve", "8000"])
    assert needs_a_camera(["cvpipe", "video", "p", "--source", "0"])
    assert not needs_a_camera(argv := ["cvpipe", "video", "p", "--source", "videos/bikes.mp4", "--serve", "8000"])
    assert shortened(argv) == argv
