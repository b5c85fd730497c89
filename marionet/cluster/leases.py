"""Task leases in the database: a running worker beats `tasks.heartbeat_at`; silent workers' tasks are requeued.

This is what makes a SIGKILLed worker lose nothing within seconds, instead of waiting for Redis's visibility
timeout: any live worker finds the stale task, puts it back to pending (or fails it after max_attempts) and
sends a new message. A pending task whose message never reached Redis, or was lost, is sent again too.
A message delivered twice is harmless: only a pending task can be claimed.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

import redis
from celery import Celery
from sqlalchemy import Row, select, update

from marionet.cluster.app import queue_for_engine, send_run
from marionet.config import Settings
from marionet.errors import TaskCancelled, TaskTimedOut
from marionet.tasks.callbacks import deliver_callback_in_background, fail_and_notify
from marionet.tasks.models import PENDING, PROCESSING, Task
from marionet.tasks.store import Store

log = logging.getLogger("marionet.leases")
REAPER_LOCK = "marionet:reaper"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


@dataclass(frozen=True)
class Lease:
    """What a heartbeat learnt about the task its worker runs."""

    status: str
    cancel_requested: bool
    started_at: float


def _owned(row: Row | None, attempt: int) -> bool:
    """A task row is still `attempt`'s unless it was requeued (pending) or claimed again (a higher attempt)."""
    return row is not None and row.attempts == attempt and row.status != PENDING


class LeaseStore:
    def __init__(self, settings: Settings, app: Celery, store: Store) -> None:
        self.settings = settings
        self.app = app
        self.store = store
        self.redis = redis.Redis.from_url(settings.redis_url)

    def renew(self, task_id: str, attempt: int) -> Lease | None:
        """Beat the heartbeat of this attempt at the task; None once the task was taken over by another.

        Taken over means requeued (status back to pending) or claimed again (a higher attempt): this worker
        looked dead to the others, so it must stop before it writes a result that is no longer its own.
        """
        with self.store.session.begin() as session:
            row = session.execute(
                select(Task.status, Task.attempts, Task.cancel_requested, Task.started_at).where(
                    Task.id == task_id
                )
            ).one_or_none()
            if not _owned(row, attempt):
                return None
            session.execute(
                update(Task)
                .where(Task.id == task_id, Task.attempts == attempt, Task.status == PROCESSING)
                .values(heartbeat_at=time.time())
            )
        return Lease(row.status, bool(row.cancel_requested), row.started_at or time.time())

    def owns(self, task_id: str, attempt: int) -> bool:
        """Whether this attempt still owns the task (see `renew`), without beating its heartbeat."""
        with self.store.session() as session:
            row = session.execute(select(Task.status, Task.attempts).where(Task.id == task_id)).one_or_none()
        return _owned(row, attempt)

    def time_out(self, task_id: str) -> None:
        """Fail a task that ran past task_timeout_s, and flag it so the engine stops at its next report."""
        fail_and_notify(self.store, task_id, TaskTimedOut(self.settings.task_timeout_s), self.settings)
        with self.store.session.begin() as session:
            session.execute(update(Task).where(Task.id == task_id).values(cancel_requested=True))

    def give_up(self, task_id: str) -> None:
        """End a task whose engine ignored a stop request (the worker process is about to exit)."""
        fail_and_notify(self.store, task_id, TaskCancelled(), self.settings)

    def requeue_stale(self) -> list[str]:
        """Requeue or fail every processing task whose heartbeat is older than the lease; returns their ids."""
        # One reaper at a time across the cluster, so a task is never requeued twice for one death.
        lock_ms = int(max(self.settings.lease_timeout_s, 5) * 1000)
        token = secrets.token_hex(8)
        if not self.redis.set(REAPER_LOCK, token, nx=True, px=lock_ms):
            return []
        try:
            requeued, failed = self.store.recover_interrupted(
                stale_before=time.time() - self.settings.lease_timeout_s
            )
            for task_id in requeued:
                self.enqueue(task_id)
            for task_id in failed:
                deliver_callback_in_background(task_id, self.settings)
            for task_id in self.resend_lost(stale_before=time.time() - self.settings.lease_timeout_s):
                log.warning("task %s was pending with no message in its queue; sent again", task_id)
            return requeued + failed
        finally:
            # Release only our own lock: it may have expired and been taken by another reaper meanwhile.
            self.redis.eval(_RELEASE, 1, REAPER_LOCK, token)

    def resend_lost(self, stale_before: float) -> list[str]:
        """Send again the pending tasks untouched since `stale_before` whose engine queue is empty.

        Such a task's message is lost (Redis was down when it was sent, or a worker failed to re-send it):
        nothing else would ever run it. While the queue still holds messages the task may be among them, so
        it waits until the queue drains; each re-send refreshes updated_at, so it repeats at most once a lease.
        """
        with self.store.session() as session:
            rows = session.execute(
                select(Task.id, Task.engine)
                .where(Task.status == PENDING, Task.updated_at < stale_before)
                .order_by(Task.seq)
            ).all()
        # One queue-length read per engine, not per task: a backlog can hold many stale pending tasks.
        drained = {
            engine for engine in {row.engine for row in rows} if not self.redis.llen(queue_for_engine(engine))
        }
        lost = [row for row in rows if row.engine in drained]
        if not lost:
            return []
        with self.store.session.begin() as session:
            session.execute(
                update(Task)
                .where(Task.id.in_([row.id for row in lost]), Task.status == PENDING)
                .values(updated_at=time.time())
            )
        for row in lost:
            send_run(self.app, row.id, row.engine)
        return [row.id for row in lost]

    def enqueue(self, task_id: str) -> None:
        send_run(self.app, task_id, self.store.get_task(task_id).engine)
