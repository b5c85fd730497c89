"""Overlap two stages on two cores: produce items in a background thread while the caller consumes them.

Decoding (PyAV), warping (cv2) and detection (MediaPipe) release the GIL, so a reader thread ahead of the
detector, or a renderer thread ahead of the encoder, runs truly in parallel.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def prefetch(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Yield `items` in order, computed up to `depth` ahead in a thread; stopping early stops the thread."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((item, None)):
                    break
            else:
                put((_END, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put((_END, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="marionet-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=10)
