"""Read ahead on a thread: the next images or frames decode while the model works on the current ones.

OpenCV releases the GIL while it decodes, so on a 2-core machine, where data-loader processes cost more than they
give, a thread overlaps decoding with inference for free (`cvpipe predict`, `cvpipe benchmark`, `cvpipe video`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Prefetch(Generic[T]):
    """Iterate `items` on a thread, `depth` queued ahead of the consumer (and one more waiting for room); an
    exception raised there is raised in the consumer. `stop()` ends the thread (waiting for the item in progress):
    call it before releasing what `items` reads from, since FFmpeg aborts if a capture is freed mid-read."""

    _DONE = object()

    def __init__(self, items: Iterable[T], depth: int = 2, name: str = "cvpipe-decode"):
        self.items, self.buffer = items, queue.Queue(maxsize=depth)
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._work, name=name, daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.halt.is_set():
            try:
                self.buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for item in self.items:
                if not self._put(item):
                    return
        except Exception as e:  # surfaces in the consumer
            self._put(e)
        self._put(self._DONE)

    def __iter__(self) -> Iterator[T]:
        while not self.halt.is_set():
            try:
                item = self.buffer.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is self._DONE:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def stop(self) -> None:
        self.halt.set()
        self.thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
