"""`cvpipe video` on a live RTSP stream: processing FPS, capture-to-display latency (median, p95) and whether
it grows over a long run, against the bare model loop over the same footage. The latency is the model's own
time plus the wait between capture and the model taking the frame; only the wait would grow if frames
queued, so it is reported on its own.

The stream is real: bikes.mp4 looped to `--seconds` by ffmpeg (stream copy, H.264) and served in real time
by GStreamer's RTSP server on loopback (tests/rtsp_server.py, under /usr/bin/python3). cvpipe's side is
the whole `Pipeline.video` (capture thread, inference, tracking if asked, drawing, MP4 and JSON-lines
writing). The baseline is `detect()` alone over the same frames, already decoded, one at a time.
Run: `python benches/stream.py [--seconds 120] [--track]`; results in benches/results/stream.json.
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
from cvpipe.engine.inference import detect
from cvpipe.io.streams import open_source
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--track", action="store_true", help="ByteTrack on (video.track=true)")
    parser.add_argument("--port", type=int, default=8574)
    args = parser.parse_args()
    bikes = fetch_dataset("videos", REPO / "data") / "bikes.mp4"
    overrides = ["video.track=true"] if args.track else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        looped = tmp / "long.mp4"
        loops = int(np.ceil(args.seconds / 10.0))  # bikes.mp4 is 10 s
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(bikes), "-an",
                        "-c", "copy", str(looped)], check=True)
        pipeline = Pipeline.from_yaml(PIPELINE, overrides + [f"output.dir={tmp}"], console=Console(quiet=True))
        baseline = bare_fps(pipeline.config, bikes)
        server = subprocess.Popen(["/usr/bin/python3", str(REPO / "tests" / "rtsp_server.py"), "--port",
                                   str(args.port), "--file", str(looped)], stdout=subprocess.PIPE, text=True)
        try:
            assert "serving" in server.stdout.readline()
            report = pipeline.video(f"rtsp://127.0.0.1:{args.port}/stream", tmp / "stream.mp4",
                                    duration=args.seconds - 1)
        finally:
            server.kill()
        lines = [json.loads(line) for line in (tmp / "stream.jsonl").read_text().splitlines()]
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
    slope = float(np.polyfit(times, latencies, 1)[0]) * 60  # ms per minute of stream
    wait_slope = float(np.polyfit(times, waits, 1)[0]) * 60
    result = {"pipeline": PIPELINE.name, "track": args.track, "seconds": round(report.seconds, 1),
              "frames": report.frames, "fps": round(report.fps, 2), "bare_fps": round(baseline, 2),
              "ratio": round(report.fps / baseline, 3), "latency_ms_median": round(report.latency(50), 1),
              "latency_ms_p95": round(report.latency(95), 1), "latency_slope_ms_per_min": round(slope, 2),
              "wait_ms_median": round(report.wait(50), 1), "wait_ms_p95": round(report.wait(95), 1),
              "wait_slope_ms_per_min": round(wait_slope, 2),
              "frames_captured": report.stats.read, "frames_skipped_live": report.stats.skipped_live,
              "drops": report.stats.drops, "windows": windows, "torch_threads": torch.get_num_threads()}
    print(f"{'':24}{'cvpipe video':>14}{'bare model loop':>18}")
    print(f"{'frames/s':24}{result['fps']:>14.2f}{baseline:>18.2f}   ratio {result['ratio']:.3f}")
    print(f"latency median / p95    {result['latency_ms_median']:.0f} / {result['latency_ms_p95']:.0f} ms; "
          f"slope {slope:+.1f} ms per minute")
    print(f"wait before the model   {result['wait_ms_median']:.0f} / {result['wait_ms_p95']:.0f} ms; "
          f"slope {wait_slope:+.1f} ms per minute (a queue would make this grow)")
    for w in windows:
        print(f"  {w['from_s']:5.0f}–{w['from_s'] + WINDOW:.0f} s: {w['frames']:4d} frames, latency median "
              f"{w['latency_ms_median']:.0f} ms, p95 {w['latency_ms_p95']:.0f} ms, wait median {w['wait_ms_median']:.0f} ms")
    print(f"captured {result['frames_captured']} frames, {result['frames_skipped_live']} skipped for newer ones, "
          f"{result['drops']} drop(s)")
    save_results("stream", result)


if __name__ == "__main__":
    main()
