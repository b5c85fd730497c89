"""Deliver the task object to its callback_url once the task has ended, signed and retried with backoff."""

from __future__ import annotations

import json
import logging
import threading
import time

from marionet.config import Settings
from marionet.errors import InputError, MarionetError
from marionet.media.fetch import post_json
from marionet.tasks.models import TERMINAL
from marionet.tasks.signing import sign_body
from marionet.tasks.store import Store
from marionet.tasks.view import task_object

log = logging.getLogger("marionet.callbacks")

# The URL itself is refused (scheme, private address...): retrying cannot help.
_REFUSED = ("unsupported_url", "url_not_allowed")


def deliver_callback(task_id: str, settings: Settings, store: Store | None = None) -> bool:
    """POST the final task object; True once a 2xx came back. Never raises."""
    store = store or Store(settings)
    task = store.get_task(task_id)
    if not task.callback_url or task.status not in TERMINAL:
        return False
    body = json.dumps(task_object(task, store, settings), separators=(",", ":")).encode()
    headers = {"X-Marionet-Signature": sign_body(body, settings), "X-Marionet-Task-Id": task.id}
    delay = settings.callback_backoff_s
    for attempt in range(1, settings.callback_attempts + 1):
        try:
            status = post_json(task.callback_url, body, headers, settings)
            if 200 <= status < 300:
                store.set_callback_status(task_id, "delivered")
                return True
            log.warning("callback for %s answered %s (attempt %d)", task_id, status, attempt)
        except InputError as exc:
            if exc.code in _REFUSED:
                log.warning("callback for %s refused: %s", task_id, exc.message)
                break
            log.warning("callback for %s failed: %s (attempt %d)", task_id, exc.message, attempt)
        except Exception as exc:  # any failure of a user's endpoint only costs a retry
            log.warning("callback for %s failed: %s (attempt %d)", task_id, exc, attempt)
        if attempt < settings.callback_attempts:
            time.sleep(delay)
            delay *= 2
    store.set_callback_status(task_id, "failed")
    return False


def delivery_span_s(settings: Settings) -> float:
    """The longest a delivery can take, every try timing out and every retry delay waited."""
    tries = settings.callback_attempts
    per_try = settings.fetch_connect_timeout_s + settings.fetch_read_timeout_s
    return tries * per_try + settings.callback_backoff_s * (2 ** (tries - 1) - 1)


def resend_lost_callbacks(settings: Settings, store: Store, now: float | None = None) -> list[str]:
    """Send again the callbacks whose delivery never finished: their sender (the task's process, a worker)
    died before a 2xx or its last try. Only tasks ended longer ago than a whole delivery can take qualify, so
    a delivery still retrying is never doubled; each is taken by one caller and sent in the background."""
    cutoff = (now or time.time()) - delivery_span_s(settings) - 60.0
    sent = []
    for task_id in store.undelivered_callbacks(cutoff):
        if store.take_callback(task_id):
            deliver_callback_in_background(task_id, settings)
            sent.append(task_id)
    return sent


def deliver_callback_in_background(task_id: str, settings: Settings) -> None:
    threading.Thread(target=deliver_callback, args=(task_id, settings), daemon=True).start()


def fail_and_notify(store: Store, task_id: str, error: MarionetError, settings: Settings) -> bool:
    """Fail a task with `error` and, if that ended it (it had not ended already), send its callback."""
    if not store.fail_with(task_id, error):
        return False
    deliver_callback_in_background(task_id, settings)
    return True
