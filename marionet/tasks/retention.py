"""Delete results and uploaded inputs once the retention period has passed."""

from __future__ import annotations

import logging
import threading
import time

from marionet.config import Settings
from marionet.media.uploads import uploads_dir
from marionet.tasks.store import Store

log = logging.getLogger("marionet.retention")


def purge_expired(settings: Settings, store: Store, now: float | None = None) -> int:
    """Delete results and uploads older than retention_hours; returns how many files went."""
    cutoff = (now or time.time()) - settings.retention_hours * 3600
    removed = 0
    for task in store.finished_before(cutoff):
        if task.result_path:
            (settings.resolved_storage_dir() / task.result_path).unlink(missing_ok=True)
        store.mark_result_deleted(task.id)
        removed += 1
    for path in uploads_dir(settings).iterdir():
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class Janitor:
    """A background thread running purge_expired every cleanup_interval_s."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="marionet-janitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                removed = purge_expired(self.settings, self.store)
                if removed:
                    log.info("retention: deleted %d files", removed)
            except Exception:
                log.exception("retention pass failed")
            self._stop.wait(self.settings.cleanup_interval_s)
