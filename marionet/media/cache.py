"""Input cache by content hash, so an input reused by many tasks is fetched and probed once.

Layout under `storage_dir/cache` (shared by every worker of a cluster, like the rest of storage_dir):
- `blobs/<sha256>`: the input's bytes, immutable once there; tasks get hard links (or copies) of it.
- `blobs/<sha256>.<kind>.json`: the verdict of validating those bytes as an image or a video: the probe's
  `info`, or the `error` it raised. The bytes decide it, so it is computed once; only the task-dependent
  duration limit is applied per task.
- `urls/<sha256 of url>.json`: `{"url", "sha256", "fetched_at"}`: a URL fetched less than
  `MARIONET_INPUT_CACHE_TTL_S` ago is not fetched again. A lock file beside it makes concurrent tasks asking
  for the same URL wait for one fetch instead of each fetching.
- `tmp/`: downloads in progress, renamed into `blobs/` when complete.
- `poses/<sha256 of the video>-<version>.npz`: the CPU engine's pose track of a driving video, and
  `poses/rig-<sha256 of the image>-<canvas>-<mesh density>-<builders' version>.npz` its rig of a character
  image (both written and read by the engine, which marks an entry used each time it reads one).
Entries unused for `retention_hours` are removed by `prune()`, which ingestion runs at most once an hour and
the retention janitor on its own schedule.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from marionet.config import Settings
from marionet.errors import InputError
from marionet.media.sandbox import validate_isolated
from marionet.media.validate import ImageInfo
from marionet.media.video import VideoInfo

_CHUNK = 1024 * 1024
# Bump when what a verdict means changes (new checks), so stored verdicts are recomputed.
_VERDICT_VERSION = 1


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _temp_in(folder: Path, name: str) -> Path:
    """A new, uniquely named empty file in `folder` (unique across processes and threads alike)."""
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    return Path(temp)


def _place(temp: Path, dest: Path) -> None:
    """Rename a finished temp file over `dest` (atomic), or remove it if that fails."""
    try:
        temp.replace(dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _write_json(path: Path, value: dict[str, Any]) -> None:
    temp = _temp_in(path.parent, path.name)
    temp.write_text(json.dumps(value))
    _place(temp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _info_from(verdict: dict[str, Any], kind: str) -> ImageInfo | VideoInfo | None:
    """The info of a stored successful verdict, or None if it is an error or unreadable."""
    if not isinstance(verdict.get("info"), dict):
        return None
    try:
        return (ImageInfo if kind == "image" else VideoInfo)(**verdict["info"])
    except TypeError:
        return None


def link_or_copy(source: Path, dest: Path) -> Path:
    """Give a task its own name for stored bytes: a hard link, or a copy across file systems."""
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
    return dest


def pose_cache_dir(settings: Settings) -> Path:
    """Where the CPU engine keeps pose tracks: in the cache of the storage_dir a cluster's workers share."""
    return settings.resolved_storage_dir() / "cache" / "poses"


class InputCache:
    """The cache directory of one storage_dir (see the module docstring for its layout)."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.resolved_storage_dir() / "cache"
        self.blobs = self.root / "blobs"
        self.urls = self.root / "urls"
        self.tmp = self.root / "tmp"
        self.poses = pose_cache_dir(settings)
        self.url_ttl_s = settings.input_cache_ttl_s
        self.retention_s = settings.retention_hours * 3600
        self.probe_timeout_s = settings.probe_timeout_s
        self.probe_memory_mb = settings.probe_memory_mb
        for folder in (self.blobs, self.urls, self.tmp, self.poses):
            folder.mkdir(parents=True, exist_ok=True)

    def blob(self, sha256: str) -> Path:
        return self.blobs / sha256

    def add_file(self, path: Path) -> str:
        """Move `path` (on the cache's file system, e.g. under tmp/) into the cache; return its hash."""
        sha256 = file_sha256(path)
        target = self.blob(sha256)
        if target.is_file():
            path.unlink(missing_ok=True)
        else:
            path.replace(target)
        return sha256

    def add_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.blob(sha256).is_file():
            temp = _temp_in(self.tmp, sha256)
            temp.write_bytes(data)
            _place(temp, self.blob(sha256))
        return sha256

    def copy_in(self, path: Path) -> str:
        """Copy a file from anywhere (an upload, a local file) into the cache; return its hash."""
        sha256 = file_sha256(path)
        if not self.blob(sha256).is_file():
            temp = _temp_in(self.tmp, sha256)
            shutil.copyfile(path, temp)
            _place(temp, self.blob(sha256))
        return sha256

    def _verdict_path(self, sha256: str, kind: str) -> Path:
        return self.blobs / f"{sha256}.{kind}.json"

    def validate(self, sha256: str, path: Path, kind: str) -> ImageInfo | VideoInfo:
        """Validate `path` (whose hash is sha256) as `kind` once, in a limited child process (media.sandbox);
        later calls answer from the stored verdict.

        Raises the same InputError as the first validation did.
        """
        verdict_path = self._verdict_path(sha256, kind)
        verdict = _read_json(verdict_path) or {}
        if verdict.get("version") == _VERDICT_VERSION:
            info = _info_from(verdict, kind)
            if info is not None:
                return info
            if isinstance(verdict.get("error"), dict):
                raise InputError.from_record(verdict["error"])
        try:
            info = validate_isolated(
                path, kind, timeout_s=self.probe_timeout_s, memory_mb=self.probe_memory_mb
            )
        except InputError as exc:
            _write_json(verdict_path, {"version": _VERDICT_VERSION, "error": exc.to_record()})
            raise
        _write_json(verdict_path, {"version": _VERDICT_VERSION, "info": asdict(info)})
        return info

    def _url_entry(self, url: str) -> Path:
        return self.urls / f"{hashlib.sha256(url.encode()).hexdigest()}.json"

    def lookup_url(self, url: str) -> str | None:
        """The content hash of `url` if it was fetched within the TTL and its bytes are still here."""
        entry = _read_json(self._url_entry(url))
        if not entry or entry.get("url") != url:
            return None
        fresh = time.time() - float(entry.get("fetched_at", 0)) < self.url_ttl_s
        sha256 = str(entry.get("sha256", ""))
        return sha256 if fresh and self.blob(sha256).is_file() else None

    def remember_url(self, url: str, sha256: str) -> None:
        _write_json(self._url_entry(url), {"url": url, "sha256": sha256, "fetched_at": time.time()})

    @contextmanager
    def url_lock(self, url: str) -> Iterator[None]:
        """Held while fetching `url`, so concurrent tasks for the same URL fetch it once."""
        lock_path = self._url_entry(url).with_suffix(".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def touch(self, sha256: str) -> None:
        """Mark an entry as used now, so prune() keeps it."""
        for used in (self.blob(sha256), *self.blobs.glob(f"{sha256}.*.json")):
            with contextlib.suppress(OSError):
                os.utime(used)

    def maybe_prune(self, interval_s: float = 3600.0) -> int:
        """prune() at most once per interval_s across all processes sharing the cache (a marker file's age)."""
        marker = self.root / ".pruned"
        try:
            if time.time() - marker.stat().st_mtime < interval_s:
                return 0
        except FileNotFoundError:
            pass
        marker.touch()
        return self.prune()

    def prune(self, now: float | None = None) -> int:
        """Remove entries unused for longer than retention_hours; return how many files went."""
        cutoff = (now or time.time()) - self.retention_s
        removed = 0
        for folder in (self.blobs, self.urls, self.tmp, self.poses):
            for path in folder.iterdir():
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except OSError:
                    continue
        return removed
