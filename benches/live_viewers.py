"""`cvpipe video --serve` under a crowd: the model's frames/s with 0, 10 and 100 viewers of the live page, and with
none again once they have left.

"The model" is the ready COCO SSD-MobileNetV2 detecting on bikes.mp4's frames (decoded beforehand, looped),
each result drawn and `publish`ed to the page as `cvpipe video` does; its rate is what a crowd must not take
away. The viewers are real HTTP clients in another process (so their own work is not this process's): each
opens `/stream/0.mjpg` as a browser's `<img>` does and reads every byte it is sent. Past the page's cap
(`MAX_VIEWERS`) a viewer is answered 503 at once; the rest are served. Beside the model's rate, each phase records
the CPU the page's sender thread used (a share of one core) and how many JPEG encodes each published frame cost
(1 at most: a frame is encoded once for all viewers, 0 where no one watches). Each phase runs `--seconds`, the four
phases `--rounds` times in turn; the figures are medians over rounds, and each ratio is against the no-viewer
phase of the same round (goal: ≥ 0.9 at 100 viewers, and back to 1.0 after).

Run: `python benches/live_viewers.py [--seconds 15] [--rounds 3]`; results in benches/results/live_viewers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.data.samples import image_tensor
from cvpipe.engine.checkpoint import load_trained
from cvpipe.io import live_view
from cvpipe.io.live_view import LiveView
from cvpipe.io.streams import open_source
from cvpipe.loading import load_pipeline
from cvpipe.ops.inference import detect
from cvpipe.viz.draw import draw_sample

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipelines" / "coco_ssd_mobilenet_v2.yaml"


def _crowd(port: int, viewers: int, seconds: float) -> dict:
    """`viewers` browser-like clients of /stream/0.mjpg, each reading all it is sent. One thread drains every
    socket four times a second (the kernel buffers between), so the crowd's own CPU stays small: on another
    machine it would cost this one nothing."""
    socks, refused, errors = [], 0, 0
    for _ in range(viewers):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.sendall(f"GET /stream/0.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            socks.append(sock)
        except OSError:
            errors += 1
    received = {sock: b"" for sock in socks}
    for sock in socks:  # the status line tells served from refused
        received[sock] = sock.recv(64)
    served = [sock for sock in socks if b" 200 " in received[sock].split(b"\r\n", 1)[0]]
    refused = len(socks) - len(served)
    for sock in socks:
        if sock not in served:
            sock.close()
        else:
            sock.setblocking(False)
    counts = {sock: len(received[sock]) for sock in served}
    stop_at = time.time() + seconds
    while time.time() < stop_at:
        time.sleep(0.25)
        for sock in served:
            try:
                while chunk := sock.recv(1 << 22):
                    counts[sock] += len(chunk)
            except BlockingIOError:
                pass
            except OSError:
                errors += 1
    for sock in served:
        sock.close()
    return {"served": len(served), "refused": refused, "errors": errors,
            "megabytes_per_viewer": round(statistics.median(counts.values()) / 2**20, 2) if counts else 0.0}


def crowd_main() -> None:
    """The viewers' process: `live_viewers.py --crowd PORT N SECONDS` prints one JSON line."""
    os.nice(19)  # the viewers stand for browsers on other machines: this one lends them only idle time
    port, viewers, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(_crowd(port, viewers, seconds)), flush=True)


def model_fps(model, tensors, frames, classes, view: LiveView, seconds: float, start: int) -> tuple[float, int]:
    """Detect, draw and publish frames for `seconds`; (frames/s, the next frame index)."""
    done, k = 0, start
    begin = time.perf_counter()
    while time.perf_counter() - begin < seconds:
        found = detect(model, [tensors[k % len(tensors)]], torch.device("cpu"))[0]
        keep = found["scores"] >= 0.5
        shown = draw_sample(frames[k % len(frames)], found["boxes"][keep].numpy(), found["labels"][keep].numpy(),
                            classes, scores=found["scores"][keep].numpy())
        view.publish(0, shown, {"fps": 0.0})
        done, k = done + 1, k + 1
    return done / (time.perf_counter() - begin), k


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15, help="each phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--viewers", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args()
    config = load_pipeline(PIPELINE)
    model, classes = load_trained(config, None, torch.device("cpu"))
    source = open_source(str(fetch_dataset("videos") / "bikes.mp4"))
    frames = [f.image for _, f in zip(range(100), source)]
    source.close()
    tensors = [image_tensor(frame) for frame in frames]
    view = LiveView("127.0.0.1:0", ["bikes.mp4"])
    port = int(view.url.rsplit(":", 1)[1].strip("/"))
    model_fps(model, tensors, frames, classes, view, 3, 0)  # warm-up
    phases = ["0", *map(str, args.viewers), "0 after"]
    rates: dict[str, list[float]] = {p: [] for p in phases}
    ratios: dict[str, list[float]] = {p: [] for p in phases}
    crowds: dict[str, dict] = {}
    sender: dict[str, list[float]] = {p: [] for p in phases}  # the page's sender thread: CPU s per s
    encoded_share: dict[str, list[float]] = {p: [] for p in phases}  # frames encoded ÷ frames published
    k = 0
    try:
        for r in range(args.rounds):
            base = None
            for phase in phases:
                crowd = None
                n = int(phase.split()[0])
                if n:
                    crowd = subprocess.Popen([sys.executable, __file__, "--crowd", str(port), str(n),
                                              str(args.seconds + 2)], stdout=subprocess.PIPE, text=True)
                    time.sleep(1.0)  # the viewers connect
                cpu, encoded, published = view.sender.cpu_seconds, view.frames[0].encoded, view.frames[0].seq
                begin = time.perf_counter()
                fps, k = model_fps(model, tensors, frames, classes, view, args.seconds, k)
                sender[phase].append((view.sender.cpu_seconds - cpu) / (time.perf_counter() - begin))
                encoded_share[phase].append((view.frames[0].encoded - encoded) / max(view.frames[0].seq - published, 1))
                if crowd is not None:
                    crowds[phase] = json.loads(crowd.communicate(timeout=60)[0])
                base = fps if phase == "0" else base
                rates[phase].append(fps)
                ratios[phase].append(fps / base)
                print(f"round {r + 1}, {phase:>7} viewers: {fps:5.2f} frames/s ({fps / base:.3f} of none), "
                      f"sender thread {sender[phase][-1]:.1%} of a core, {encoded_share[phase][-1]:.2f} encodes a frame"
                      + (f"; {crowds[phase]}" if crowd is not None else ""), flush=True)
                time.sleep(1.0)  # the viewers' threads notice they left
    finally:
        view.close()
    summary = {phase: {"fps_median": round(statistics.median(rates[phase]), 2),
                       "ratio_to_no_viewers_median": round(statistics.median(ratios[phase]), 3),
                       "sender_cpu_share_median": round(statistics.median(sender[phase]), 4),
                       "encodes_per_frame_max": round(max(encoded_share[phase]), 3),
                       "fps_per_round": [round(v, 2) for v in rates[phase]], **({"crowd": crowds[phase]}
                                                                                   if phase in crowds else {})}
               for phase in phases}
    for phase, row in summary.items():
        print(f"{phase:>7} viewers: {row['fps_median']:.2f} frames/s median, {row['ratio_to_no_viewers_median']:.3f} "
              f"of the no-viewer rate; the sender thread {row['sender_cpu_share_median']:.1%} of a core, at most "
              f"{row['encodes_per_frame_max']:.2f} encodes per frame")
    path = save_results("live_viewers", {"seconds_per_phase": args.seconds, "rounds": args.rounds,
                                         "max_viewers": live_view.MAX_VIEWERS, "phases": summary})
    print(f"→ {path}")


if __name__ == "__main__":
    crowd_main() if len(sys.argv) > 1 and sys.argv[1] == "--crowd" else main()
