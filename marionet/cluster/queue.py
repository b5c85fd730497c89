"""The Celery dispatcher (`MARIONET_QUEUE=celery`): the API only enqueues; `marionet worker` processes run tasks."""

from __future__ import annotations

import logging

from sqlalchemy import select

from marionet.cluster.app import make_celery, send_run
from marionet.config import Settings
from marionet.tasks.models import PENDING, Task
from marionet.tasks.store import Store

log = logging.getLogger("marionet.cluster")


class CeleryDispatcher:
    """Sends one message per task to its engine's queue; state and recovery stay in the database."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store(settings)
        self.app = make_celery(settings)

    def start(self) -> None:
        """Send pending tasks again, in case the API stopped between saving a task and enqueueing it.

        Tasks left `processing` are not touched here: they may be running on live workers, whose heartbeats
        decide (see `marionet.cluster.leases`). A duplicate message is harmless: only a pending task is claimed.
        """
        with self.store.session() as session:
            pending = list(session.scalars(select(Task).where(Task.status == PENDING).order_by(Task.seq)))
        try:
            for task in pending:
                self.send(task)
        except Exception:  # the broker is down: the workers' lease reaper re-sends what stays pending
            log.exception("could not send the pending tasks to the queue; workers will send them again")
            return
        if pending:
            log.info("sent %d pending tasks to the queue again", len(pending))

    def submit(self, task_id: str) -> None:
        self.send(self.store.get_task(task_id))

    def send(self, task: Task) -> None:
        send_run(self.app, task.id, task.engine)

    def stop(self) -> None:
        self.app.close()
