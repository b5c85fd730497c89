"""Dispatchers: who runs pending tasks. The embedded default is a bounded pool inside the server whose
tasks each run in a child process, so a crash in media or model code fails one task, never the server.

A dispatcher only has to claim tasks (`Store.claim_next` / `Store.claim_within_limit`) and call
`marionet.tasks.runner.execute_task` for each; a Celery dispatcher can do the same from a worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import threading
import time
from multiprocessing.connection import Connection
from typing import Protocol

from marionet.config import Settings
from marionet.engine import preload_engines
from marionet.errors import MarionetError, TaskCancelled, TaskTimedOut
from marionet.media.ingest import workdir_path
from marionet.tasks.callbacks import deliver_callback_in_background, fail_and_notify
from marionet.tasks.models import PROCESSING
from marionet.tasks.runner import execute_task
from marionet.tasks.store import Store

log = logging.getLogger("marionet.queue")

# How long a child may keep running after a cancel before it is killed (it should stop at its next report).
CANCEL_GRACE_S = 10.0
_POLL_S = 0.25


class Dispatcher(Protocol):
    """Runs pending tasks somewhere. `submit` is a hint that one was created; polling must not depend on it."""

    def start(self) -> None: ...

    def submit(self, task_id: str) -> None: ...

    def stop(self) -> None: ...


def _exit_with_parent(parent_pid: int) -> None:
    """A child whose server died (SIGKILL) must stop too: the next server reruns its task."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(3)


def _child_main(conn: Connection, settings: Settings, parent_pid: int) -> None:
    """Entry point of a task process. It is started before its task: it loads the engine's libraries (a couple
    of seconds of imports) while the server is idle, then waits for the one task id it will run."""
    logging.basicConfig(level=logging.INFO)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    try:
        preload_engines()
    except Exception:
        # Keep waiting: the task then fails with the real error, and a spare that died here would only be
        # started again and again by its thread.
        log.exception("loading the engine ahead of a task failed")
    try:
        task_id = conn.recv()
    except EOFError:  # the server let this spare go without a task
        return
    execute_task(task_id, settings)


class EmbeddedDispatcher:
    """`settings.workers` threads, each claiming one task at a time and running it in a spawned child.

    Each thread keeps one child started ahead of its next task (a "spare"), so a task that arrives at an idle
    server does not wait for the child's imports. A spare is started when its thread is between tasks, and
    beside a running task only once another task is waiting: its imports then take some CPU from the running
    task, but the waiting one starts the moment a thread is free instead of paying them after it.
    """

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store(settings)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._children: dict[str, multiprocessing.process.BaseProcess] = {}
        self._spares: dict[str, _Spare] = {}  # by worker thread name
        self._lock = threading.Lock()
        self._ctx = multiprocessing.get_context("spawn")

    def start(self) -> None:
        """Recover tasks a previous server left behind, then start the pool."""
        requeued, failed = self.store.recover_interrupted()
        for task_id in failed:
            deliver_callback_in_background(task_id, self.settings)
        if requeued or failed:
            log.warning("recovered interrupted tasks: %d requeued, %d failed", len(requeued), len(failed))
        for n in range(self.settings.workers):
            thread = threading.Thread(target=self._loop, name=f"marionet-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, task_id: str) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop children now; their tasks go back to the queue without losing an attempt."""
        # Under the lock that registers and removes children: each child is either copied here or never
        # started, and none is removed once stopping is set (see _run_child).
        with self._lock:
            self._stopping.set()
            children = dict(self._children)
            spares = list(self._spares.values())
            self._spares.clear()
        self._wake.set()
        for spare in spares:
            spare.discard()
        for task_id, child in children.items():
            child.terminate()
            child.join(5)
            if child.is_alive():
                child.kill()
            self.store.requeue(task_id, refund_attempt=True)
        for thread in self._threads:
            thread.join(5)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if not self._ensure_spare():
                break
            try:
                task_id = self.store.claim_next()
            except Exception:
                log.exception("claiming a task failed")
                task_id = None
            if task_id is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._run_child(task_id)
            except Exception:
                log.exception("supervising task %s failed", task_id)
                error = MarionetError("The server could not run this task.", code="internal_error")
                fail_and_notify(self.store, task_id, error, self.settings)

    def _ensure_spare(self) -> bool:
        """Start this thread's spare child unless a live one waits already; False once the pool is stopping."""
        with self._lock:
            if self._stopping.is_set():
                return False
            self._live_spare(threading.current_thread().name)
            return True

    def _live_spare(self, name: str) -> _Spare:
        """Thread `name`'s spare, a fresh one in place of none or of one that died; the caller holds the lock."""
        spare = self._spares.get(name)
        if spare is None or not spare.process.is_alive():
            if spare is not None:
                spare.discard()
            spare = self._spares[name] = _Spare.start(self._ctx, self.settings)
        return spare

    def _run_child(self, task_id: str) -> None:
        name = threading.current_thread().name
        with self._lock:
            if self._stopping.is_set():  # stop() has already taken its copy: run nothing it cannot stop
                self.store.requeue(task_id, refund_attempt=True)
                return
            spare = self._live_spare(name)
            del self._spares[name]
            if not spare.hand_over(task_id):
                # It died between the check and the hand-over: a fresh child takes the task.
                spare.discard()
                spare = _Spare.start(self._ctx, self.settings)
                if not spare.hand_over(task_id):
                    spare.discard()
                    raise RuntimeError("a new task process did not accept its task")
            child = spare.process
            self._children[task_id] = child
        started = time.monotonic()
        cancel_seen: float | None = None
        ended_here = False
        try:
            while child.is_alive():
                child.join(_POLL_S)
                if self._stopping.is_set():
                    return  # stop() terminates the child and requeues its task
                if not child.is_alive():
                    break
                if name not in self._spares and self.store.has_pending():
                    self._ensure_spare()  # a burst: the next task's process gets ready meanwhile
                task = self.store.get_task(task_id)
                if task.cancel_requested and cancel_seen is None:
                    cancel_seen = time.monotonic()
                if cancel_seen is not None and time.monotonic() - cancel_seen > CANCEL_GRACE_S:
                    self._kill(child)
                    ended_here = self.store.fail_with(task_id, TaskCancelled())
                elif time.monotonic() - started > self.settings.task_timeout_s:
                    self._kill(child)
                    ended_here = self.store.fail_with(task_id, TaskTimedOut(self.settings.task_timeout_s))
        finally:
            with self._lock:
                if not self._stopping.is_set():  # else stop() terminates it and requeues its task
                    self._children.pop(task_id, None)
        if self._stopping.is_set():
            return
        task = self.store.get_task(task_id)
        shutil.rmtree(workdir_path(self.settings, task_id, task.attempts), ignore_errors=True)
        # A child that died without ending its task (segfault, OOM kill) fails that task only.
        crashed = task.status == PROCESSING and self.store.fail(
            task_id,
            "engine_crashed",
            f"The process making this video stopped unexpectedly (exit code {child.exitcode}).",
        )
        if crashed or ended_here:
            deliver_callback_in_background(task_id, self.settings)

    @staticmethod
    def _kill(child: multiprocessing.process.BaseProcess) -> None:
        child.terminate()
        child.join(2)
        if child.is_alive():
            child.kill()
            child.join(2)


class _Spare:
    """A spawned task process waiting (after its imports) for the id of the task it will run."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    @classmethod
    def start(cls, ctx, settings: Settings) -> _Spare:
        receiving, sending = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_child_main, args=(receiving, settings, os.getpid()), name="marionet-task"
        )
        process.start()
        receiving.close()  # the child holds its own copy
        return cls(process, sending)

    def hand_over(self, task_id: str) -> bool:
        """Give the spare its task; False if it is gone."""
        if not self.process.is_alive():
            return False
        try:
            self.conn.send(task_id)
        except OSError:
            return False
        finally:
            self.conn.close()
        return True

    def discard(self) -> None:
        """Let a spare go: closing its pipe ends it as soon as its imports are done; stragglers are killed."""
        self.conn.close()
        self.process.terminate()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2)


def make_dispatcher(settings: Settings, store: Store | None = None) -> Dispatcher:
    """The dispatcher `settings.queue` names."""
    if settings.queue == "embedded":
        return EmbeddedDispatcher(settings, store)
    if settings.queue == "celery":
        from marionet.cluster.queue import CeleryDispatcher

        return CeleryDispatcher(settings, store)
    raise NotImplementedError(f"queue '{settings.queue}' is not available in this build")
