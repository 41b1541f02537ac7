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
    """Iterate `items` on a thread, at most `depth` items ahead of the one the consumer holds (decoded or being
    decoded: a large image is held `depth` + 1 times at most); an exception raised there is raised in the
    consumer. `stop()` ends the thread (waiting for the item in progress): call it before releasing what `items`
    reads from, since FFmpeg aborts if a capture is freed mid-read."""

    _DONE = object()

    def __init__(self, items: Iterable[T], depth: int = 2, name: str = "cvpipe-decode"):
        self.items, self.buffer = items, queue.SimpleQueue()
        self.room = threading.Semaphore(depth)  # taken before an item is made, given back when one is consumed
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._work, name=name, daemon=True)
        self.thread.start()

    def _wait_for_room(self) -> bool:
        while not self.halt.is_set():
            if self.room.acquire(timeout=0.1):
                return True
        return False

    def _work(self) -> None:
        try:
            iterator = iter(self.items)
            while self._wait_for_room():
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                self.buffer.put(item)
        except Exception as e:  # surfaces in the consumer
            self.buffer.put(e)
        self.buffer.put(self._DONE)

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
            self.room.release()
            yield item

    def stop(self) -> None:
        self.halt.set()
        self.thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
