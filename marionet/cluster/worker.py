"""`marionet worker`: consumes one engine queue per declared engine and runs each task in this process."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from marionet.cluster.app import RUN_TASK, make_celery, queue_for_engine
from marionet.cluster.leases import LeaseStore
from marionet.config import Settings, get_settings

log = logging.getLogger("marionet.worker")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Heartbeat(threading.Thread):
    """Renews the lease of the task this worker runs and requeues tasks whose own worker went silent."""

    def __init__(self, leases: LeaseStore, worker_id: str, interval_s: float) -> None:
        super().__init__(name="marionet-heartbeat", daemon=True)
        self.leases = leases
        self.worker_id = worker_id
        self.interval_s = interval_s
        self.current: str | None = None
        self._stop_event = threading.Event()

    @contextmanager
    def holding(self, task_id: str) -> Iterator[None]:
        """Hold `task_id`'s lease while the body runs (beaten before the claim, so it is never unleased)."""
        self.leases.renew(task_id, self.worker_id)
        self.current = task_id
        try:
            yield
        finally:
            self.current = None
            self.leases.release(task_id, self.worker_id)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                if self.current is not None:
                    self.leases.renew(self.current, self.worker_id)
                for task_id in self.leases.requeue_stale():
                    log.warning("requeued task %s: its worker stopped sending heartbeats", task_id)
            except Exception:  # the database may be briefly unreachable; the next beat tries again
                log.exception("heartbeat failed")
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()


def run_worker(settings: Settings, engines: list[str], worker_id: str | None = None) -> int:
    """Serve the engines' queues until a warm shutdown (SIGTERM finishes the running task first)."""
    from marionet.tasks.runner import execute_task

    worker_id = worker_id or default_worker_id()
    app = make_celery(settings)
    leases = LeaseStore(settings, app)
    heartbeat = Heartbeat(leases, worker_id, settings.heartbeat_interval_s)

    @app.task(name=RUN_TASK)
    def run_task(task_id: str) -> None:
        # A message for a task that is no longer pending (done, cancelled, or running elsewhere) is a no-op:
        # execute_task's claim only succeeds on a pending task.
        with heartbeat.holding(task_id):
            execute_task(task_id, settings)

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
