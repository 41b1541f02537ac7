"""`cvpipe video` on live RTSP streams: processing FPS, capture-to-display latency (median, p95) and whether
it grows over a long run, for 1, 2 and 4 streams in one run (their frames through the model in one call), and
for 4 streams watched on the live page (`--serve`) by a headless Chromium. The latency is the model's own
time plus the wait between capture and the model taking the frame; only the wait would grow if frames queued,
so it is reported on its own.

The streams are real: bikes.mp4 looped to `--seconds` by ffmpeg (stream copy, H.264) and served in real time
(25 fps) by GStreamer's RTSP server on loopback (tests/rtsp_server.py, under /usr/bin/python3), one server per
stream. cvpipe's side is the whole `Pipeline.video` (capture threads, inference, tracking if asked, drawing,
MP4 and JSON-lines writing). Baselines measured in the same run: `detect()` alone over the same frames, already
decoded, one at a time (for one stream), and one stream's rate (for N streams: total frames/s ÷ one stream's),
and the same stream without the page (for `--serve`: FPS ÷ without it, alternating runs).
Run: `python benches/stream.py [--seconds 120] [--streams 1 2 4] [--serve-rounds 2] [--track]`; results in
benches/results/stream.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path
from rich.console import Console

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.data.samples import image_tensor
from cvpipe.engine.checkpoint import load_trained
from cvpipe.io.streams import open_source
from cvpipe.ops.inference import detect
from cvpipe.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipelines" / "coco_ssd_mobilenet_v2.yaml"
WINDOW = 30.0  # seconds per latency window


def bare_fps(config, bikes: Path, frames: int = 100) -> float:
    model, _ = load_trained(config, None, torch.device("cpu"))
    source = open_source(str(bikes))
    tensors = [image_tensor(f.image) for _, f in zip(range(frames), source)]
    source.close()
    detect(model, tensors[:1], torch.device("cpu"))  # warm-up
    times = []
    for tensor in tensors:
        start = time.perf_counter()
        detect(model, [tensor], torch.device("cpu"))
        times.append(time.perf_counter() - start)
    return 1 / statistics.median(times)


def latency_profile(report, lines: list[dict]) -> dict:
    """One stream's figures: FPS, latency median / p95, and the latency's and wait's slopes over the run."""
    times = np.array([line["time"] for line in lines])
    latencies, waits = np.array(report.latencies_ms), np.array(report.waits_ms)
    windows = []
    for start in np.arange(0, times.max(), WINDOW):
        sel = (times >= start) & (times < start + WINDOW)
        if sel.sum():
            windows.append({"from_s": float(start), "frames": int(sel.sum()),
                            "latency_ms_median": round(float(np.median(latencies[sel])), 1),
                            "latency_ms_p95": round(float(np.percentile(latencies[sel], 95)), 1),
                            "wait_ms_median": round(float(np.median(waits[sel])), 1)})
    return {"frames": report.frames, "fps": round(report.fps, 2), "latency_ms_median": round(report.latency(50), 1),
            "latency_ms_p95": round(report.latency(95), 1),
            "latency_slope_ms_per_min": round(float(np.polyfit(times, latencies, 1)[0]) * 60, 2),
            "wait_ms_median": round(report.wait(50), 1), "wait_ms_p95": round(report.wait(95), 1),
            "wait_slope_ms_per_min": round(float(np.polyfit(times, waits, 1)[0]) * 60, 2),
            "frames_captured": report.stats.read, "frames_skipped_live": report.stats.skipped_live,
            "drops": report.stats.drops, "windows": windows}


def run_streams(pipeline, looped: Path, tmp: Path, n: int, seconds: float, port: int, serve: bool) -> list[dict]:
    """`n` RTSP servers on loopback, one `Pipeline.video` over all of them; with `serve`, the live page is up and
    a headless Chromium keeps it open for the whole run."""
    servers = [subprocess.Popen(["/usr/bin/python3", str(REPO / "tests" / "rtsp_server.py"), "--port", str(port + k),
                                 "--file", str(looped)], stdout=subprocess.PIPE, text=True) for k in range(n)]
    browser = None
    try:
        for server in servers:
            assert "serving" in server.stdout.readline()
        urls = [f"rtsp://127.0.0.1:{port + k}/stream" for k in range(n)]
        out = tmp / f"run{n}{'_serve' if serve else ''}"
        options = {"serve": f"127.0.0.1:{port + 100}"} if serve else {}
        if serve:  # the browser waits for the page (its first tries are refused until the model has loaded)
            browser = subprocess.Popen(
                ["bash", "-c", f"for i in $(seq 60); do curl -sf http://127.0.0.1:{port + 100}/ >/dev/null && break; "
                 f"sleep 0.5; done; exec chromium --headless --no-sandbox --disable-gpu --window-size=900,600 "
                 f"--timeout={int(seconds * 1000)} --screenshot={out}.png http://127.0.0.1:{port + 100}/"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reports = pipeline.video(urls, out, duration=seconds - 1, **options)
    finally:
        for server in servers:
            server.kill()
        if browser:
            browser.kill()
    profiles = []
    for report in reports:
        lines = [json.loads(line) for line in report.jsonl.read_text().splitlines()]
        profiles.append(latency_profile(report, lines))
    return profiles


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=120, help="each multi-stream run")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--serve-seconds", type=float, default=60, help="each run of the --serve comparison")
    parser.add_argument("--serve-rounds", type=int, default=2, help="alternating runs with and without the page")
    parser.add_argument("--serve-streams", type=int, default=4, help="streams in the --serve comparison (4: the "
                        "model, not the cameras' 25 fps, sets the pace, so the page's cost shows)")
    parser.add_argument("--track", action="store_true", help="ByteTrack on (video.track=true)")
    parser.add_argument("--port", type=int, default=8574)
    args = parser.parse_args()
    bikes = fetch_dataset("videos", REPO / "data") / "bikes.mp4"
    overrides = ["video.track=true"] if args.track else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        looped = tmp / "long.mp4"
        loops = int(np.ceil(max(args.seconds, args.serve_seconds) / 10.0))  # bikes.mp4 is 10 s
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(bikes), "-an",
                        "-c", "copy", str(looped)], check=True)
        pipeline = Pipeline.from_yaml(PIPELINE, overrides + [f"output.dir={tmp}"], console=Console(quiet=True))
        baseline = bare_fps(pipeline.config, bikes)
        runs = {n: run_streams(pipeline, looped, tmp, n, args.seconds, args.port, False) for n in args.streams}
        serve_fps: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.serve_rounds):
            for serve in (False, True):
                profiles = run_streams(pipeline, looped, tmp, args.serve_streams, args.serve_seconds, args.port, serve)
                serve_fps[serve].append(round(sum(p["fps"] for p in profiles), 2))
    one = sum(p["fps"] for p in runs[min(runs)]) / min(runs)
    print(f"COCO SSD, RTSP streams at 25 fps on loopback, {args.seconds:g} s each; bare model loop "
          f"{baseline:.2f} frames/s")
    print(f"{'streams':>8}{'total frames/s':>16}{'÷ one stream':>14}   per stream: FPS, latency median / p95 ms, "
          "latency slope ms/min")
    table = []
    for n, profiles in runs.items():
        total = sum(p["fps"] for p in profiles)
        per = "; ".join(f"{p['fps']:.1f}, {p['latency_ms_median']:.0f} / {p['latency_ms_p95']:.0f}, "
                        f"{p['latency_slope_ms_per_min']:+.0f}" for p in profiles)
        print(f"{n:>8}{total:>16.2f}{total / one:>14.2f}   {per}")
        table.append({"streams": n, "total_fps": round(total, 2), "ratio_to_one": round(total / one, 3),
                      "per_stream": profiles})
    serve_ratio = statistics.median(serve_fps[True]) / statistics.median(serve_fps[False])
    print(f"{args.serve_streams} streams with --serve and a browser attached: {statistics.median(serve_fps[True]):.2f} "
          f"frames/s vs {statistics.median(serve_fps[False]):.2f} without (medians of {args.serve_rounds} alternating runs of "
          f"{args.serve_seconds:g} s): ratio {serve_ratio:.3f}")
    save_results("stream", {"pipeline": PIPELINE.name, "track": args.track, "seconds": args.seconds,
                            "bare_fps": round(baseline, 2), "streams": table,
                            "serve": {"streams": args.serve_streams, "fps_with": serve_fps[True], "fps_without": serve_fps[False],
                                      "ratio": round(serve_ratio, 3)},
                            "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
