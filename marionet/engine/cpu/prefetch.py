"""Overlap two stages on two cores: produce items in a background thread while the caller consumes them.

Decoding (PyAV), warping (cv2) and detection (MediaPipe) release the GIL, so a reader thread ahead of the
detector, or a renderer thread ahead of the encoder, runs truly in parallel.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

A = TypeVar("A")
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


def ordered_map(fn: Callable[[A], T], items: Iterable[A], workers: int = 2, depth: int = 6) -> Iterator[T]:
    """`map(fn, items)` in order, computed by `workers` threads at most `depth` ahead of the consumer.

    For per-frame work made of GIL-releasing calls (cv2 warps and composites) this uses both cores while the
    caller encodes. Stopping early cancels what has not started and waits for what has.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="marionet-render")
    pending: deque[Future[T]] = deque()
    source = iter(items)
    try:
        for item in source:
            pending.append(pool.submit(fn, item))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
