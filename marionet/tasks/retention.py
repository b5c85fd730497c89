"""Delete results, uploaded inputs and cached inputs once the retention period has passed, and the scratch
folders that crashed attempts left behind; send again the callbacks a dead process never finished sending."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time

from marionet.config import Settings
from marionet.errors import NotFound
from marionet.media.cache import InputCache
from marionet.media.uploads import uploads_dir
from marionet.tasks.callbacks import resend_lost_callbacks
from marionet.tasks.models import PROCESSING
from marionet.tasks.store import Store

log = logging.getLogger("marionet.retention")

# A scratch folder untouched this long that no processing attempt owns was left by a dead run.
STALE_WORKDIR_S = 3600.0
_WORKDIR = re.compile(r"^(?P<task>.+)\.a(?P<attempt>\d+)$")


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
    removed += InputCache(settings).prune(now=now)
    removed += _remove_stale_workdirs(settings, store, (now or time.time()) - STALE_WORKDIR_S)
    return removed


def _remove_stale_workdirs(settings: Settings, store: Store, cutoff: float) -> int:
    """Remove work/<task_id>.a<attempt> folders older than cutoff unless that attempt is still running."""
    work = settings.resolved_storage_dir() / "work"
    if not work.is_dir():
        return 0
    removed = 0
    for path in work.iterdir():
        try:
            if path.stat().st_mtime >= cutoff or _running(path.name, store):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def _running(name: str, store: Store) -> bool:
    match = _WORKDIR.match(name)
    if match is None:
        return False
    try:
        task = store.get_task(match["task"])
    except NotFound:
        return False
    return task.status == PROCESSING and task.attempts == int(match["attempt"])


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
                resent = resend_lost_callbacks(self.settings, self.store)
                if resent:
                    log.warning("callbacks whose delivery never finished, sent again: %s", ", ".join(resent))
            except Exception:
                log.exception("retention pass failed")
            self._stop.wait(self.settings.cleanup_interval_s)
