"""The server secret, signed expiring result links, and callback body signatures (all HMAC-SHA256)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from marionet.config import Settings
from marionet.errors import Gone, PermissionDenied


@lru_cache(maxsize=8)
def _secret_from_file(path: Path) -> bytes:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        tmp = Path(name)
        # link() fails if another process created it first, so every process ends with the same secret.
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip().encode()


def server_secret(settings: Settings) -> bytes:
    """MARIONET_SECRET, or one generated once into data_dir/secret."""
    if settings.secret:
        return settings.secret.encode()
    return _secret_from_file((settings.data_dir / "secret").resolve())


def sign_body(body: bytes, settings: Settings) -> str:
    """Hex HMAC-SHA256 of a callback body: the X-Marionet-Signature header."""
    return hmac.new(server_secret(settings), body, hashlib.sha256).hexdigest()


def _link_signature(task_id: str, expires: int, settings: Settings) -> str:
    return hmac.new(
        server_secret(settings), f"result:{task_id}:{expires}".encode(), hashlib.sha256
    ).hexdigest()


def result_link(task_id: str, base_url: str, settings: Settings, now: float | None = None) -> str:
    expires = int((now or time.time()) + settings.result_link_ttl_s)
    signature = _link_signature(task_id, expires, settings)
    return f"{base_url.rstrip('/')}/v1/results/{task_id}.mp4?expires={expires}&signature={signature}"


def verify_result_link(task_id: str, expires: str, signature: str, settings: Settings) -> None:
    """403 for a link we did not sign, 410 for one past its expiry."""
    try:
        expires_at = int(expires)
    except ValueError:
        raise PermissionDenied("This result link is not valid.", param="expires") from None
    expected = _link_signature(task_id, expires_at, settings)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
        raise PermissionDenied("This result link is not valid.", param="signature")
    if expires_at < time.time():
        raise Gone("This result link has expired; read the task again for a fresh one.", code="link_expired")
