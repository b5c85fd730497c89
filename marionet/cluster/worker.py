"""`marionet worker`: consumes one engine queue per declared engine and runs each task in this process."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from sqlalchemy.exc import DBAPIError

from marionet.cluster.app import RUN_TASK, make_celery, queue_for_engine
from marionet.cluster.leases import LeaseStore
from marionet.config import Settings, get_settings
from marionet.tasks.models import PROCESSING

log = logging.getLogger("marionet.worker")

# How long an engine may keep running after a cancel or timeout before its worker process exits.
STOP_GRACE_S = 10.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def exit_worker(reason: str) -> NoReturn:
    """Leave at once with EX_TEMPFAIL (75): a supervisor restarts the worker; its unacknowledged message
    comes back later as a no-op."""
    log.error("%s; stopping this worker", reason)
    logging.shutdown()
    os._exit(75)


def exit_taken_over(task_id: str, attempt: int) -> NoReturn:
    # This worker looked dead to the others; exiting is the only way to be sure it never writes a result too.
    exit_worker(f"task {task_id} attempt {attempt} was taken over")


class Heartbeat(threading.Thread):
    """Renews the lease of the task this worker runs and requeues tasks whose own worker went silent.

    It also enforces what the embedded pool enforces by killing its child: a task past `task_timeout_s` is
    failed, and an engine that has not stopped STOP_GRACE_S after a cancel or timeout costs this process.
    """

    def __init__(self, leases: LeaseStore, settings: Settings) -> None:
        super().__init__(name="marionet-heartbeat", daemon=True)
        self.leases = leases
        self.settings = settings
        self.current: tuple[str, int] | None = None
        self.stop_asked_at: float | None = None
        self._stop_event = threading.Event()

    @contextmanager
    def holding(self, task_id: str, attempt: int) -> Iterator[None]:
        """Beat this attempt's heartbeat while the body runs (the claim itself sets the first beat)."""
        self.stop_asked_at = None
        self.current = (task_id, attempt)
        try:
            yield
        finally:
            self.current = None

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                current = self.current
                if current is not None:
                    self._watch(*current)
                for task_id in self.leases.requeue_stale():
                    log.warning("task %s requeued or failed: its worker stopped sending heartbeats", task_id)
            except Exception:  # the database may be briefly unreachable; the next beat tries again
                log.exception("heartbeat failed")
            self._stop_event.wait(self.settings.heartbeat_interval_s)

    def _watch(self, task_id: str, attempt: int) -> None:
        lease = self.leases.renew(task_id, attempt)
        if lease is None:
            exit_taken_over(task_id, attempt)
        elif lease.cancel_requested:
            now = time.monotonic()
            self.stop_asked_at = self.stop_asked_at or now
            if now - self.stop_asked_at > STOP_GRACE_S and self.current == (task_id, attempt):
                self.leases.give_up(task_id)
                exit_worker(
                    f"task {task_id}'s engine did not stop {STOP_GRACE_S:.0f} s after it was asked to"
                )
        elif lease.status == PROCESSING and time.time() - lease.started_at > self.settings.task_timeout_s:
            log.warning("task %s ran past %.0f s; stopping it", task_id, self.settings.task_timeout_s)
            self.leases.time_out(task_id)

    def stop(self) -> None:
        self._stop_event.set()


def _migrate_with_retry(settings: Settings, attempts: int = 10) -> None:
    """Bring the schema up to date; the API may be migrating the same database at this very moment."""
    from marionet.tasks.db import migrate

    for attempt in range(1, attempts + 1):
        try:
            migrate(settings)
            return
        except DBAPIError:
            if attempt == attempts:
                raise
            time.sleep(1.0)


def run_worker(settings: Settings, engines: list[str], worker_id: str | None = None) -> int:
    """Serve the engines' queues until a warm shutdown (SIGTERM finishes the running task first)."""
    from marionet.engine import preload_engines
    from marionet.tasks.runner import execute_task
    from marionet.tasks.store import Store

    worker_id = worker_id or default_worker_id()
    _migrate_with_retry(settings)
    app = make_celery(settings)
    store = Store(settings)
    leases = LeaseStore(settings, app, store)
    heartbeat = Heartbeat(leases, settings)

    # A database hiccup before the claim must not lose the message: retry it later instead of acking it.
    @app.task(name=RUN_TASK, autoretry_for=(DBAPIError,), retry_backoff=True, max_retries=None)
    def run_task(task_id: str) -> None:
        # The claim succeeds only on a pending task, so a message for a task that is done, cancelled or
        # running elsewhere (a redelivery) is acknowledged without doing anything; it is refused (None) while
        # the task's key runs its limit of tasks, counted in the claim's own transaction.
        claimed = store.claim_within_limit(task_id)
        if claimed is None:
            # Back to the tail of the queue: the key already runs its limit of tasks elsewhere.
            time.sleep(settings.heartbeat_interval_s / 2)
            leases.enqueue(task_id)
            return
        if not claimed:
            log.info("task %s is not pending any more; message dropped", task_id)
            return
        attempt = store.get_task(task_id).attempts
        log.info("worker %s running task %s (attempt %d)", worker_id, task_id, attempt)
        with heartbeat.holding(task_id, attempt):
            execute_task(task_id, settings)
        # The engine may learn before the heartbeat does that this attempt was taken over (its progress report
        # is refused and it stops): the worker then exits just as if its heartbeat had learnt it first.
        if not leases.owns(task_id, attempt):
            exit_taken_over(task_id, attempt)

    preload_engines()  # the first task then starts as fast as the next ones
    heartbeat.start()
    worker = app.Worker(
        hostname=f"marionet@{worker_id}",
        queues=[queue_for_engine(engine) for engine in engines],
        # solo: the task runs in this very process, so SIGKILL leaves no orphan still writing a result.
        pool="solo",
        concurrency=1,
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        optimization="fair",
        loglevel="INFO",
    )
    log.info("worker %s serving %s", worker_id, ", ".join(engines))
    try:
        worker.start()
    finally:
        heartbeat.stop()
    return worker.exitcode or 0


def run_worker_cli(args: argparse.Namespace) -> int:
    """Entry point of `marionet worker`."""
    from marionet.engine import engine_names

    settings = get_settings()
    engines = [name.strip() for name in (args.engines or settings.worker_engines).split(",") if name.strip()]
    unknown = sorted(set(engines) - set(engine_names()))
    if not engines or unknown:
        print(f"marionet worker: unknown engines {unknown}; this installation has {engine_names()}")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run_worker(settings, engines)
