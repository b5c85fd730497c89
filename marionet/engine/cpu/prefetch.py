"""Draw frames on two cores while the caller encodes them.

Drawing a frame is a few dozen cv2 calls and as many small numpy steps between them, which hold the GIL: two
drawing threads beside the encoder barely overlap (the dance's 288 frames: 4.4 s drawn on one thread, 4.9 s
on two). On Linux the frames are drawn by forked processes into shared memory instead; elsewhere, or where
no process can be forked, by threads (`ordered_map`).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import pickle
import signal
import sys
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe
from typing import TypeVar

import numpy as np

from marionet.errors import MarionetError

A = TypeVar("A")
T = TypeVar("T")

# A process stopped mid-frame finishes that frame first; one that has not exited this long after is killed.
STOP_GRACE_S = 10.0


def drawn_frames(
    draw: Callable[[int], np.ndarray], count: int, shape: tuple[int, ...], workers: int = 2
) -> Iterator[np.ndarray]:
    """draw(0), ..., draw(count - 1), uint8 arrays of `shape`, in order, drawn `workers` at a time: by forked
    processes on Linux, by threads elsewhere. Each frame is valid until the next one is asked for."""
    if sys.platform.startswith("linux"):
        return forked_map(draw, count, shape, workers)
    return ordered_map(draw, range(count), workers)


def ordered_map(fn: Callable[[A], T], items: Iterable[A], workers: int = 2, depth: int = 6) -> Iterator[T]:
    """`map(fn, items)` in order, computed by `workers` threads at most `depth` ahead of the consumer.

    Stopping early cancels what has not started and waits for what has.
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


def forked_map(
    draw: Callable[[int], np.ndarray], count: int, shape: tuple[int, ...], workers: int = 2, depth: int = 3
) -> Iterator[np.ndarray]:
    """draw(0), ..., draw(count - 1) in order, each drawn by one of `workers` forked processes into memory
    shared with this one, at most `depth` frames ahead per process.

    The processes inherit `draw` and everything it reads (the character, the motion) as they are at the fork,
    so nothing is copied or pickled. A yielded frame is a view of the shared memory: valid until the next frame
    is asked for. An exception raised by `draw` is raised here; a process that dies is an `engine_crashed`
    error. Stopping early (closing the generator) stops the processes. Where no process can be forked, threads
    draw (`ordered_map`).
    """
    if count <= 0:
        return
    workers = max(1, min(workers, count))
    slots = workers * depth
    memory = np.frombuffer(mmap.mmap(-1, slots * math.prod(shape)), np.uint8)  # anonymous, shared across fork
    pipes: list[Connection] = []
    pids: list[int] = []
    try:
        for _ in range(workers):
            ours, theirs = Pipe()
            try:
                pid = _fork()
            except OSError:  # a process limit or no memory: draw with the processes there are, or threads
                ours.close()
                theirs.close()
                break
            if pid == 0:
                for pipe in (*pipes, ours):
                    pipe.close()
                _draw_on_request(draw, theirs, memory, shape)  # never returns
            theirs.close()
            pipes.append(ours)
            pids.append(pid)
        if not pids:
            yield from ordered_map(draw, range(count), workers)
            return
        workers = len(pids)
        sent = 0
        for index in range(count):
            # Frame index - 1 has been used: its slot may take the frame `slots` after it.
            while sent < min(index + slots, count):
                # A process that has died is not asked again: its failure, or its end, is raised where its
                # next frame is awaited.
                with contextlib.suppress(OSError):
                    pipes[sent % workers].send((sent, sent % slots))
                sent += 1
            worker = index % workers  # each process answers its own requests in the order they came
            slot = _answer(pipes[worker], pids[worker])
            yield _slot(memory, slot, shape)
    finally:
        _stop(pipes, pids)


@dataclass
class _Failure:
    """What a drawing process answers instead of a slot when `draw` raised."""

    error: BaseException
    trace: str  # where, in that process


def _failure(error: BaseException) -> _Failure:
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        pickle.dumps(error)
    except Exception:
        error = RuntimeError(f"{type(error).__name__}: {error}")
    return _Failure(error, trace)


class _RemoteTraceback(Exception):
    """Where in a drawing process the error was raised (chained to the error re-raised here)."""

    def __str__(self) -> str:
        return f"\n\nin the drawing process:\n{self.args[0]}"


def _fork() -> int:
    # Python 3.12 warns about fork() in a process with threads (the pose graphs' and the server's): a lock
    # some thread holds at the fork stays held in the child. The child here only runs numpy and cv2 (whose
    # pthreads pool is rebuilt after a fork) and leaves by os._exit, touching none of those threads' locks.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*fork\(\).*", category=DeprecationWarning)
        return os.fork()


def _draw_on_request(draw: Callable[[int], np.ndarray], pipe: Connection, memory: np.ndarray, shape) -> None:
    """The forked process: draw each (index, slot) asked for into its slot and answer with the slot, until
    told to stop (None) or the parent is gone; then leave at once, running no cleanup of the parent's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which stops this
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's graceful-shutdown handler
    status = 0
    try:
        while (request := pipe.recv()) is not None:
            index, slot = request
            _slot(memory, slot, shape)[...] = draw(index)
            pipe.send(slot)
    except (EOFError, OSError):
        status = 1  # the parent is gone
    except BaseException as error:
        with contextlib.suppress(Exception):
            pipe.send(_failure(error))
        status = 1
    finally:
        os._exit(status)


def _slot(memory: np.ndarray, slot: int, shape: tuple[int, ...]) -> np.ndarray:
    size = math.prod(shape)
    return memory[slot * size : (slot + 1) * size].reshape(shape)


def _answer(pipe: Connection, pid: int) -> int:
    try:
        answer = pipe.recv()
    except (EOFError, OSError):
        raise MarionetError(
            f"A drawing process of the engine stopped unexpectedly ({_exit_status(pid)}).",
            code="engine_crashed",
        ) from None
    if isinstance(answer, _Failure):
        raise answer.error from _RemoteTraceback(answer.trace)
    return answer


def _exit_status(pid: int) -> str:
    with contextlib.suppress(ChildProcessError):
        status = _reaped(pid, 1.0)
        if status is not None:
            if os.WIFSIGNALED(status):
                return f"killed by signal {os.WTERMSIG(status)}"
            return f"exit status {os.WEXITSTATUS(status)}"
    return "no exit status"


def _reaped(pid: int, timeout: float) -> int | None:
    """Wait up to `timeout` seconds for the child `pid` to exit and reap it: its wait status, or None while it
    still runs. ChildProcessError: it was reaped already."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)


def _stop(pipes: list[Connection], pids: list[int]) -> None:
    """Tell every drawing process to stop, wait for it to exit (killing one that takes too long)."""
    for pipe in pipes:
        with contextlib.suppress(OSError):
            pipe.send(None)
        pipe.close()
    deadline = time.monotonic() + STOP_GRACE_S
    for pid in pids:
        with contextlib.suppress(ChildProcessError):  # reaped already, where its death was reported
            if _reaped(pid, max(0.0, deadline - time.monotonic())) is None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
