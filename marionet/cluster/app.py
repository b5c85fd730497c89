"""The Celery application: broker settings that make a task survive a worker killed mid-run."""

from __future__ import annotations

from celery import Celery

from marionet.config import Settings

RUN_TASK = "marionet.run_task"


def queue_for_engine(engine: str) -> str:
    """One queue per engine kind, so a GPU engine's tasks only reach workers that declared that engine."""
    return f"engine.{engine}"


def send_run(app: Celery, task_id: str, engine: str) -> None:
    """Put a "run this task" message on its engine's queue: the one message format the workers consume."""
    app.send_task(RUN_TASK, args=[task_id], queue=queue_for_engine(engine))


def make_celery(settings: Settings) -> Celery:
    """A Celery app on `settings.redis_url`; results live in the task database, so there is no result backend."""
    app = Celery("marionet", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        # Acknowledge only after the task ran: a message whose worker died is delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # A worker holds one message at a time, so queued work is never stuck behind a busy worker.
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=queue_for_engine(settings.model_v3_engine),
        # Redis gives an unacknowledged message back after this long; lease reaping is the fast path.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app
