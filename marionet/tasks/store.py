"""Data access for keys and tasks. Every state change is a conditional UPDATE, so it is atomic on any database."""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import func, select, update

from marionet.config import Settings
from marionet.errors import Conflict, MarionetError, NotFound, RateLimited, TaskCancelled
from marionet.tasks.db import session_factory
from marionet.tasks.models import COMPLETED, FAILED, PENDING, PROCESSING, STATUSES, TERMINAL, ApiKey, Task

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
KEY_PREFIX = "mk-"


def hash_key(token: str) -> str:
    """Keys are 256-bit random tokens, so one SHA-256 is a safe, fast lookup hash."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_task_id(created: int) -> str:
    return f"task-unified-{created}-{''.join(secrets.choice(_ID_ALPHABET) for _ in range(8))}"


@dataclass(frozen=True)
class NewTask:
    """The validated parameters of a create request."""

    model: str
    engine: str
    mode: str
    prompt: str
    character_orientation: str
    keep_original_sound: bool
    image_url: str
    video_url: str
    callback_url: str | None
    base_url: str
    warnings: tuple[str, ...] = ()  # known when the task is created (the engine's own may follow)


class Store:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session = session_factory(settings)

    # --- keys -------------------------------------------------------------------------------------------
    def create_key(self, name: str) -> tuple[ApiKey, str]:
        """A new key row and its token; the token itself is never stored."""
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(name=name, prefix=token[:10], key_hash=hash_key(token), created_at=time.time())
        with self.session.begin() as s:
            s.add(key)
        return key, token

    def list_keys(self) -> list[ApiKey]:
        with self.session() as s:
            return list(s.scalars(select(ApiKey).order_by(ApiKey.id)))

    def count_active_keys(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0

    def revoke_key(self, ident: str) -> ApiKey:
        """Revoke by id, prefix or name (a name must be unambiguous)."""
        with self.session.begin() as s:
            keys = list(s.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))))
            found = [k for k in keys if str(k.id) == ident or k.prefix == ident]
            found = found or [k for k in keys if k.name == ident]
            if len(found) != 1:
                raise NotFound(f"No single active key matches '{ident}'.", code="key_not_found")
            found[0].revoked_at = time.time()
            return found[0]

    def key_for_token(self, token: str) -> ApiKey | None:
        with self.session() as s:
            return s.scalar(
                select(ApiKey).where(ApiKey.key_hash == hash_key(token), ApiKey.revoked_at.is_(None))
            )

    # --- tasks: create and read ---------------------------------------------------------------------------
    def create_task(self, key_id: int, new: NewTask) -> Task:
        """Insert a pending task, refusing with 429 when the key already has its limit queued."""
        now = time.time()
        created = int(now)
        with self.session.begin() as s:
            queued = self._locked_count(s, key_id, PENDING)
            if queued >= self.settings.max_queued_per_key:
                raise RateLimited(
                    f"This key already has {queued} tasks waiting (limit {self.settings.max_queued_per_key});"
                    " wait for some to finish.",
                    code="too_many_queued_tasks",
                )
            task = Task(
                id=new_task_id(created),
                api_key_id=key_id,
                created=created,
                updated_at=now,
                status=PENDING,
                progress=0,
                attempts=0,
                cancel_requested=False,
                warnings=json.dumps(list(new.warnings)),
                result_deleted=False,
                **{name: value for name, value in new.__dict__.items() if name != "warnings"},
            )
            s.add(task)
        return task

    def get_task(self, task_id: str, key_id: int | None = None) -> Task:
        """The task, or NotFound (also when it belongs to another key)."""
        with self.session() as s:
            query = select(Task).where(Task.id == task_id)
            if key_id is not None:
                query = query.where(Task.api_key_id == key_id)
            task = s.scalar(query)
        if task is None:
            raise NotFound(f"No task '{task_id}' for this key.", code="task_not_found", param="task_id")
        return task

    def list_tasks(self, key_id: int, limit: int, after: str | None) -> tuple[list[Task], bool]:
        """A page of the key's tasks, newest first, starting after the task id `after`."""
        with self.session() as s:
            query = select(Task).where(Task.api_key_id == key_id)
            if after:
                seq = s.scalar(select(Task.seq).where(Task.id == after, Task.api_key_id == key_id))
                if seq is None:
                    raise NotFound(f"No task '{after}' for this key.", code="task_not_found", param="after")
                query = query.where(Task.seq < seq)
            rows = list(s.scalars(query.order_by(Task.seq.desc()).limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    # --- tasks: lifecycle -----------------------------------------------------------------------------------
    def claim(self, task_id: str) -> bool:
        """Move one pending task to processing; True only for the single caller that won it."""
        with self.session.begin() as s:
            return self._claim(s, task_id)

    def claim_within_limit(self, task_id: str) -> bool | None:
        """claim(), unless the task's key already runs max_running_per_key tasks: then None, claiming nothing.

        The count and the claim are one transaction holding the key's row (FOR UPDATE on PostgreSQL; SQLite
        serialises write transactions), so workers claiming tasks of one key at once never exceed its limit.
        """
        with self.session.begin() as s:
            key_id = s.scalar(select(Task.api_key_id).where(Task.id == task_id))
            if key_id is None:
                return False
            if self._locked_count(s, key_id, PROCESSING) >= self.settings.max_running_per_key:
                return None
            return self._claim(s, task_id)

    @staticmethod
    def _locked_count(s, key_id: int, status: str) -> int:
        """The key's tasks in `status`, counted while holding the key's row until the transaction ends (FOR
        UPDATE on PostgreSQL; SQLite serialises write transactions through BEGIN IMMEDIATE), so the count holds
        for whatever the transaction does next."""
        s.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())
        return s.scalar(
            select(func.count()).select_from(Task).where(Task.api_key_id == key_id, Task.status == status)
        )

    @staticmethod
    def _claim(s, task_id: str) -> bool:
        now = time.time()
        result = s.execute(
            update(Task)
            .where(Task.id == task_id, Task.status == PENDING)
            .values(
                status=PROCESSING,
                attempts=Task.attempts + 1,
                started_at=now,
                heartbeat_at=now,
                updated_at=now,
            )
        )
        return result.rowcount == 1

    def claim_next(self) -> str | None:
        """Claim the oldest pending task whose key is under its running limit; None when there is none."""
        for _ in range(10):
            with self.session() as s:
                busy = (
                    select(Task.api_key_id)
                    .where(Task.status == PROCESSING)
                    .group_by(Task.api_key_id)
                    .having(func.count() >= self.settings.max_running_per_key)
                )
                task_id = s.scalar(
                    select(Task.id)
                    .where(Task.status == PENDING, Task.api_key_id.not_in(busy))
                    .order_by(Task.seq)
                    .limit(1)
                )
            if task_id is None:
                return None
            if self.claim_within_limit(task_id):
                return task_id
        return None

    def has_pending(self) -> bool:
        """Whether any task waits to be claimed (by any key, under its running limit or not)."""
        with self.session() as s:
            return s.scalar(select(Task.id).where(Task.status == PENDING).limit(1)) is not None

    def record_input(self, task_id: str, duration_s: float) -> None:
        with self.session.begin() as s:
            s.execute(
                update(Task)
                .where(Task.id == task_id)
                .values(video_duration_s=duration_s, billed_seconds=max(1, math.ceil(duration_s - 1e-6)))
            )

    def report_progress(self, task_id: str, progress: int, *, attempt: int | None = None) -> bool:
        """Raise progress (never lower it) and beat the heartbeat; returns whether the run must stop.

        It must stop once a cancel was requested, or when `attempt` no longer owns the task (it was requeued
        or taken over): an old attempt then neither moves progress nor keeps the lease alive.
        """
        now = time.time()
        owner = [Task.status == PROCESSING] + ([] if attempt is None else [Task.attempts == attempt])
        with self.session.begin() as s:
            s.execute(
                update(Task)
                .where(Task.id == task_id, Task.progress < progress, *owner)
                .values(progress=progress, updated_at=now)
            )
            beat = s.execute(update(Task).where(Task.id == task_id, *owner).values(heartbeat_at=now))
            if attempt is not None and beat.rowcount != 1:
                return True
            return bool(s.scalar(select(Task.cancel_requested).where(Task.id == task_id)))

    def complete(
        self,
        task_id: str,
        result_path: str,
        engine_seconds: float,
        warnings: list[str],
        *,
        attempt: int | None = None,
    ) -> bool:
        """Mark a processing task completed; False if it ended meanwhile or `attempt` no longer owns it."""
        now = time.time()
        owner = [] if attempt is None else [Task.attempts == attempt]
        with self.session.begin() as s:
            result = s.execute(
                update(Task)
                .where(Task.id == task_id, Task.status == PROCESSING, *owner)
                .values(
                    status=COMPLETED,
                    progress=100,
                    result_path=result_path,
                    engine_seconds=engine_seconds,
                    warnings=json.dumps(warnings),
                    finished_at=now,
                    updated_at=now,
                )
            )
            return result.rowcount == 1

    def fail(self, task_id: str, code: str, message: str, *, attempt: int | None = None) -> bool:
        """End a pending or processing task as failed; False if it had already ended, or if `attempt` is
        given and no longer owns it (only a processing task that this attempt claimed can be failed then)."""
        now = time.time()
        if attempt is None:
            owner = [Task.status.in_((PENDING, PROCESSING))]
        else:
            owner = [Task.status == PROCESSING, Task.attempts == attempt]
        with self.session.begin() as s:
            result = s.execute(
                update(Task)
                .where(Task.id == task_id, *owner)
                .values(
                    status=FAILED, error_code=code, error_message=message, finished_at=now, updated_at=now
                )
            )
            return result.rowcount == 1

    def fail_with(self, task_id: str, error: MarionetError, *, attempt: int | None = None) -> bool:
        """fail() with the code and sentence of `error` (e.g. TaskCancelled(), TaskTimedOut(limit))."""
        return self.fail(task_id, error.code, error.message, attempt=attempt)

    def request_cancel(self, task_id: str, key_id: int) -> bool:
        """Cancel now if pending (returns True), else flag a processing task for its runner (False)."""
        task = self.get_task(task_id, key_id)
        if task.status == PENDING and self.fail_with(task_id, TaskCancelled()):
            return True
        with self.session.begin() as s:
            result = s.execute(
                update(Task)
                .where(Task.id == task_id, Task.status == PROCESSING)
                .values(cancel_requested=True, updated_at=time.time())
            )
        if result.rowcount != 1:
            raise Conflict(f"Task '{task_id}' has already finished; it cannot be cancelled.", param="task_id")
        return False

    def requeue(self, task_id: str, *, refund_attempt: bool) -> None:
        """Put a processing task back in the queue (a graceful shutdown refunds the attempt).

        Progress is kept: a polling client sees it rise monotonically; the next attempt only raises it.
        """
        with self.session.begin() as s:
            s.execute(
                update(Task)
                .where(Task.id == task_id, Task.status == PROCESSING)
                .values(
                    status=PENDING,
                    attempts=Task.attempts - (1 if refund_attempt else 0),
                    updated_at=time.time(),
                )
            )

    def recover_interrupted(self, stale_before: float | None = None) -> tuple[list[str], list[str]]:
        """Tasks left `processing` by a dead worker: rerun them, or fail them after max_attempts.

        `stale_before`: only tasks whose heartbeat is older (None: all, right for a single embedded server).
        Returns (requeued ids, failed ids).
        """
        with self.session() as s:
            query = select(Task).where(Task.status == PROCESSING)
            if stale_before is not None:
                query = query.where(Task.heartbeat_at < stale_before)
            stuck = list(s.scalars(query))
        requeued, failed = [], []
        for task in stuck:
            if task.cancel_requested:
                self.fail_with(task.id, TaskCancelled())
                failed.append(task.id)
            elif task.attempts >= self.settings.max_attempts:
                self.fail(
                    task.id,
                    "worker_lost",
                    f"The worker running this task stopped {task.attempts} times; giving up.",
                )
                failed.append(task.id)
            else:
                self.requeue(task.id, refund_attempt=False)
                requeued.append(task.id)
        return requeued, failed

    # --- figures -------------------------------------------------------------------------------------------
    def counts_by_status(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(select(Task.status, func.count()).group_by(Task.status)).all()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({status: n for status, n in rows})
        return counts

    def engine_seconds_total(self) -> float:
        with self.session() as s:
            return float(s.scalar(select(func.coalesce(func.sum(Task.engine_seconds), 0.0))) or 0.0)

    def engine_speed(self, recent: int = 20) -> float:
        """Engine seconds per driving-video second, averaged over recent completed tasks."""
        with self.session() as s:
            rows = s.execute(
                select(Task.engine_seconds, Task.video_duration_s)
                .where(Task.status == COMPLETED, Task.engine_seconds > 0, Task.video_duration_s > 0)
                .order_by(Task.seq.desc())
                .limit(recent)
            ).all()
        if not rows:
            return self.settings.default_engine_speed
        return sum(e for e, _ in rows) / sum(d for _, d in rows)

    def typical_duration(self, recent: int = 20) -> float:
        """Driving-video seconds to assume for a task whose video is not probed yet."""
        with self.session() as s:
            rows = s.scalars(
                select(Task.video_duration_s)
                .where(Task.video_duration_s.is_not(None))
                .order_by(Task.seq.desc())
                .limit(recent)
            ).all()
        return sum(rows) / len(rows) if rows else 5.0

    def work_ahead(self, seq: int) -> list[tuple[float | None, int]]:
        """(duration, progress) of every unfinished task queued before `seq`."""
        with self.session() as s:
            return [
                tuple(row)
                for row in s.execute(
                    select(Task.video_duration_s, Task.progress).where(
                        Task.seq < seq, Task.status.in_((PENDING, PROCESSING))
                    )
                ).all()
            ]

    def finished_before(self, cutoff: float) -> list[Task]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(Task).where(
                        Task.finished_at < cutoff,
                        Task.result_path.is_not(None),
                        Task.result_deleted.is_(False),
                    )
                )
            )

    def mark_result_deleted(self, task_id: str) -> None:
        with self.session.begin() as s:
            s.execute(update(Task).where(Task.id == task_id).values(result_deleted=True))

    def undelivered_callbacks(self, ended_before: float, limit: int = 100) -> list[str]:
        """Ended tasks with a callback URL whose delivery never finished (its sender died), oldest first."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(Task.id)
                    .where(
                        Task.status.in_(TERMINAL),
                        Task.callback_url.is_not(None),
                        Task.callback_status.is_(None),
                        Task.finished_at < ended_before,
                    )
                    .order_by(Task.seq)
                    .limit(limit)
                )
            )

    def take_callback(self, task_id: str) -> bool:
        """Mark a never-finished callback as being sent again; True only for the one caller that may send it."""
        with self.session.begin() as s:
            result = s.execute(
                update(Task)
                .where(Task.id == task_id, Task.callback_status.is_(None))
                .values(callback_status="resending")
            )
            return result.rowcount == 1

    def set_callback_status(self, task_id: str, status: str) -> None:
        with self.session.begin() as s:
            s.execute(update(Task).where(Task.id == task_id).values(callback_status=status))
