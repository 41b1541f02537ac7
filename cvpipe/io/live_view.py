"""`cvpipe video --serve [HOST:]PORT`: a local web page showing each stream's annotated frames live, with its
figures (FPS, latency, objects per class, counts, the stream's health).

The frames go out as MJPEG (`multipart/x-mixed-replace`, which every browser shows in an `<img>` without
script), served by the standard library's threading HTTP server; the figures are JSON the page polls. The page
is one self-contained HTML document (no CDN, no external asset), since the machine may be offline.

The model's loop only `publish`es a frame (a reference, no copy, no encoding). One sender thread serves every
viewer: it encodes each new frame once (OpenCV releases the GIL) and hands the JPEG to each viewer's socket
without blocking, so a crowd wakes one thread per frame, not one per viewer, and the model's threads are left
alone. A viewer that connects late starts at the newest frame; a slow viewer, whose last frame has not left
yet, skips frames instead of queueing them (the same newest-frame rule as live capture), and one that reads
nothing for `SEND_TIMEOUT` seconds is dropped. Connections are capped (`MAX_CONNECTIONS`, `MAX_VIEWERS`
streams). benches/live_viewers.py measures the model's frames/s with 0, 10 and 100 viewers.

The page answers only requests whose Host is the address it is bound to (or a name the user gave in --serve,
localhost on a loopback or wildcard address): another site's page cannot read the stream through DNS rebinding.
"""

from __future__ import annotations

import html
import ipaddress
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import cv2
import numpy as np

from cvpipe.errors import CvpipeError
from cvpipe.numbers import is_int

JPEG_QUALITY = 80
BOUNDARY = "cvpipe-frame"
MAX_CONNECTIONS = 64  # requests served at once; more are answered 503 at once
MAX_VIEWERS = 32  # MJPEG streams open at once, all streams together
SEND_TIMEOUT = 10.0  # seconds a viewer may leave a frame unread before it is dropped


def parse_address(text: str) -> tuple[str, int]:
    """`PORT` or `HOST:PORT` (IPv6 hosts in brackets, `[::1]:8000`); the host defaults to 127.0.0.1: nothing is
    exposed to the network unless asked. Port 0 picks a free one."""
    host, colon, port = text.rpartition(":")
    if host.startswith("[") != host.endswith("]") or (":" in host.strip("[]") and not host.startswith("[")):
        raise CvpipeError(f"--serve {text}: write an IPv6 host in brackets, e.g. [::1]:8000")
    host = host.strip("[]") or "127.0.0.1"
    if not is_int(port, 0, 65535):
        raise CvpipeError(f"--serve {text}: expected PORT or HOST:PORT with a port from 0 to 65535, e.g. 8000, "
                          "0.0.0.0:8000 or [::1]:8000")
    return host, int(port)


def allowed_hosts(host: str, port: int) -> set[str]:
    """The Host header values the page answers: the bound address (and what names it), with and without the port."""
    names = {host}
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name the user gave
        address = None
    if address is not None and (address.is_loopback or address.is_unspecified):
        names |= {"localhost", "127.0.0.1", "::1"}
    if address is not None and address.is_unspecified:  # every interface: the machine's own names
        names |= {socket.gethostname(), socket.getfqdn()}
    hosts = set()
    for name in names:
        shown = f"[{name}]" if ":" in name else name
        hosts |= {shown.lower(), f"{shown}:{port}".lower()}
    return hosts


def host_allowed(header: str | None, allowed: set[str], wildcard: bool) -> bool:
    """Whether a request's Host names this server. Bound to every interface, any IP literal is fine too (a
    rebinding attack needs a DNS name)."""
    if not header:
        return False
    header = header.strip().lower()
    if header in allowed:
        return True
    if wildcard:
        try:
            host = urlsplit(f"//{header}").hostname or ""
        except ValueError:
            return False
        return _is_ip(host)
    return False


class LatestFrame:
    """One stream's newest annotated frame, JPEG-encoded at most once, on a viewer's demand."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.seq = 0
        self.image: np.ndarray | None = None
        self.jpeg: tuple[int, bytes] = (0, b"")  # (seq, bytes) of the last encoded frame
        self.encoding = False  # a thread is encoding the newest frame; others wanting it wait for that JPEG
        self.encoded = 0  # frames encoded, for tests and the benchmark

    def publish(self, image: np.ndarray) -> None:
        with self.changed:
            self.image, self.seq = image, self.seq + 1
            self.changed.notify_all()

    def newer_than(self, seq: int, timeout: float) -> tuple[int, bytes] | None:
        """The JPEG of the newest frame if it is newer than `seq` (waiting up to `timeout` s for one), else None."""
        with self.changed:
            if not self.changed.wait_for(lambda: self.seq > seq, timeout):
                return None
            if not self.changed.wait_for(lambda: self.jpeg[0] == self.seq or not self.encoding, timeout):
                return None
            if self.jpeg[0] == self.seq:  # the newest is encoded already (or by the thread we waited for)
                return self.jpeg
            self.encoding, newest, image = True, self.seq, self.image
        data = None
        try:
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        finally:
            with self.changed:  # the JPEG and the end of encoding in one step: no waiter sees neither
                if data is not None:
                    self.encoded += 1
                    self.jpeg = max(self.jpeg, (newest, data.tobytes()), key=lambda pair: pair[0])
                self.encoding = False
                self.changed.notify_all()
        return self.jpeg


@dataclass
class _Viewer:
    """One open MJPEG stream: its socket (non-blocking), the stream it shows, what is still to be sent."""

    sock: socket.socket
    k: int
    seq: int = 0  # the frame last handed to it
    pending: bytes = b""
    since: float = 0.0  # when `pending` last shrank
    done: threading.Event = field(default_factory=threading.Event)


class Sender:
    """The one thread that sends every viewer its stream's newest frame (see the module's docstring)."""

    def __init__(self, frames: list[LatestFrame], closing: threading.Event):
        self.frames, self.closing = frames, closing
        self.viewers: list[_Viewer] = []
        self.lock = threading.Lock()
        self.fresh = threading.Event()  # a frame was published, or a viewer came
        self.cpu_seconds = 0.0  # this thread's CPU time so far (benches/live_viewers.py)
        self.thread = threading.Thread(target=self._run, name="cvpipe-live-sender", daemon=True)
        self.thread.start()

    def add(self, viewer: _Viewer) -> None:
        with self.lock:
            self.viewers.append(viewer)
        self.fresh.set()

    def _run(self) -> None:
        while not self.closing.is_set():
            self.cpu_seconds = time.thread_time()
            with self.lock:
                viewers = list(self.viewers)
            self.fresh.wait(0.02 if any(v.pending for v in viewers) else 1.0)
            self.fresh.clear()
            for viewer in viewers:
                if not viewer.pending:
                    newest = self.frames[viewer.k].newer_than(viewer.seq, timeout=0)
                    if newest is None:
                        continue
                    viewer.seq, data = newest
                    viewer.pending = (f"Content-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                                      + data + f"\r\n--{BOUNDARY}\r\n".encode())
                    viewer.since = time.monotonic()
                self._flush(viewer)
        with self.lock:
            for viewer in self.viewers:
                viewer.done.set()

    def _flush(self, viewer: _Viewer) -> None:
        try:
            sent = viewer.sock.send(viewer.pending)
        except BlockingIOError:
            sent = 0
        except OSError:  # the viewer left
            return self._drop(viewer)
        if sent:
            viewer.pending, viewer.since = viewer.pending[sent:], time.monotonic()
        elif time.monotonic() - viewer.since > SEND_TIMEOUT:  # it stopped reading
            self._drop(viewer)

    def _drop(self, viewer: _Viewer) -> None:
        with self.lock:
            self.viewers.remove(viewer)
        viewer.done.set()


class LiveView:
    """The server: `publish(k, frame, figures)` from the model's loop; `close()` stops it."""

    def __init__(self, address: str, names: list[str]):
        host, port = parse_address(address)
        self.names = names
        self.frames = [LatestFrame() for _ in names]
        self.figures: list[dict] = [{} for _ in names]
        self.closing = threading.Event()
        self.viewers = threading.BoundedSemaphore(MAX_VIEWERS)
        self.sender = Sender(self.frames, self.closing)
        handler = type("Handler", (_Handler,), {"view": self})
        server_class = _IPv6Server if ":" in host else _Server
        try:
            self.server = server_class((host, port), handler)
        except (OSError, OverflowError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise CvpipeError(f"--serve {address}: cannot listen there ({reason}); choose another address or "
                              "port") from None
        port = self.server.server_address[1]
        self.wildcard = ipaddress.ip_address(host).is_unspecified if _is_ip(host) else False
        self.allowed = allowed_hosts(host, port)
        shown_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown_host}:{port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, name="cvpipe-live-view", daemon=True)
        self.thread.start()

    def publish(self, k: int, image: np.ndarray, figures: dict) -> None:
        self.figures[k] = figures
        self.frames[k].publish(image)
        self.sender.fresh.set()

    def ended(self) -> None:
        """Every source has ended: the page keeps the last frames and figures, and says so."""
        self.figures = [f | {"health": {**f["health"], "state": "ended"}} if "health" in f else f
                        for f in self.figures]

    def close(self) -> None:
        self.closing.set()
        for frame in self.frames:
            with frame.changed:
                frame.changed.notify_all()
        self.sender.fresh.set()
        self.sender.thread.join()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Server(ThreadingHTTPServer):
    """At most MAX_CONNECTIONS requests at once; the next is answered 503 and closed without a thread."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, *args, **kwargs):
        self.active = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if not self.active.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.active.release()


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    view: LiveView
    protocol_version = "HTTP/1.1"
    timeout = SEND_TIMEOUT  # a viewer that stops reading (or never sends its request) is dropped

    def log_message(self, format, *args) -> None:  # the console belongs to the run's own output
        pass

    def do_GET(self) -> None:
        if not host_allowed(self.headers.get("Host"), self.view.allowed, self.view.wildcard):
            self.send_error(HTTPStatus.MISDIRECTED_REQUEST, "this page answers only its own address; open the "
                                                           "URL cvpipe printed")
            return
        path = self.path.split("?")[0]
        if path in ("/", "/index.html"):
            self._send(page(self.view.names).encode(), "text/html; charset=utf-8")
        elif path == "/stats.json":
            self._send(json.dumps({"streams": self.view.figures}).encode(), "application/json")
        elif path.startswith("/stream/") and path.endswith(".mjpg") and self._stream_index(path) is not None:
            if not self.view.viewers.acquire(blocking=False):
                self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, f"{MAX_VIEWERS} viewers already; try again later")
                return
            try:
                self._mjpeg(self._stream_index(path))
            finally:
                self.view.viewers.release()
        elif path.startswith("/frame/") and path.endswith(".jpg") and self._stream_index(path) is not None:
            newest = self.view.frames[self._stream_index(path)].newer_than(0, timeout=5)
            if newest is None:
                self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "no frame yet")
            else:
                self._send(newest[1], "image/jpeg")
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _stream_index(self, path: str) -> int | None:
        stem = path.rsplit("/", 1)[1].split(".")[0]
        return int(stem) if is_int(stem, 0, len(self.view.names) - 1) else None

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _mjpeg(self, k: int) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        # each part is followed at once by the next boundary: a browser shows a part when that arrives, so the
        # newest frame is on screen now, not one frame later (and an ended stream's last frame shows at all)
        self.wfile.write(f"--{BOUNDARY}\r\n".encode())
        self.wfile.flush()
        self.connection.setblocking(False)  # from here the sender writes, never waiting on this viewer
        viewer = _Viewer(self.connection, k)
        self.view.sender.add(viewer)
        viewer.done.wait()  # this thread sleeps until the viewer leaves or the page closes


def page(names: list[str]) -> str:
    """The viewer page: a grid with one tile per stream (MJPEG image and its figures, polled twice a second)."""
    tiles = "\n".join(
        f'<figure><img src="/stream/{k}.mjpg" alt="stream {k}"><figcaption><b>{html.escape(name)}</b>'
        f'<pre id="stats-{k}">waiting for the first frame…</pre></figcaption></figure>'
        for k, name in enumerate(names))
    return PAGE.replace("{tiles}", tiles).replace("{columns}", str(min(len(names), 2)))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cvpipe live</title>
<style>
body { margin: 0; background: #111; color: #eee; font: 14px system-ui, sans-serif; }
header { padding: 8px 12px; background: #222; }
main { display: grid; grid-template-columns: repeat({columns}, 1fr); gap: 8px; padding: 8px; }
figure { margin: 0; background: #1b1b1b; padding: 6px; }
img { width: 100%; display: block; background: #000; }
pre { margin: 4px 0 0; white-space: pre-wrap; font: 12px ui-monospace, monospace; color: #cfc; }
</style></head>
<body><header>cvpipe live view <span id="state"></span></header>
<main>
{tiles}
</main>
<script>
function lines(s) {
  const out = [`${s.fps.toFixed(1)} FPS   latency ${s.latency_ms.toFixed(0)} ms   frame ${s.frame}`];
  const objects = Object.entries(s.objects || {}).map(([c, n]) => `${n} ${c}`).join(", ");
  out.push(`objects: ${objects || "none"}`);
  for (const [name, c] of Object.entries(s.lines || {})) {
    const f = (d) => Object.entries(d).map(([k, n]) => `${n} ${k}`).join(", ") || "0";
    out.push(`line ${name}: in ${f(c.in)} / out ${f(c.out)}`);
  }
  for (const [name, c] of Object.entries(s.zones || {})) {
    out.push(`zone ${name}: ${Object.entries(c).map(([k, n]) => `${n} ${k}`).join(", ") || "empty"}`);
  }
  const h = s.health;
  out.push(`stream: ${h.state}; ${h.read} read, ${h.skipped} skipped for newer, ${h.drops} drops, ` +
           `${h.reconnects} reconnects`);
  return out.join("\\n");
}
async function poll() {
  try {
    const r = await fetch("/stats.json", {cache: "no-store"});
    const data = await r.json();
    data.streams.forEach((s, k) => { if (s.fps !== undefined) document.getElementById(`stats-${k}`).textContent = lines(s); });
    document.getElementById("state").textContent = "";
  } catch (e) {
    document.getElementById("state").textContent = "(the run has ended)";
  }
}
poll(); setInterval(poll, 500);
</script></body></html>
"""
