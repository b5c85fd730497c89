"""Overlap two stages on two cores: compute items in background threads while the caller consumes them.

Warping and compositing (cv2) release the GIL, so renderer threads ahead of the encoder run truly in parallel.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

A = TypeVar("A")
T = TypeVar("T")


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
