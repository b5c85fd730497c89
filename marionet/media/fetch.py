"""Outbound HTTP for untrusted URLs (inputs and callbacks): one URL-safety check, one fetcher.

Interface (issue #4 hardens the internals: SSRF refusal, pinned resolved address, per-hop redirect checks,
timeouts, byte caps):
- `check_url(url, settings, param)`: raise InputError if the URL may not be fetched (scheme, host, address).
- `fetch_to_file(url, dest, settings, *, max_bytes, param)`: stream a GET into dest.
- `post_json(url, body, headers, settings)`: POST bytes (callbacks); returns the HTTP status.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import httpx

from marionet.config import Settings
from marionet.errors import InputError, PayloadTooLarge


def check_url(url: str, settings: Settings, param: str) -> None:
    scheme = urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise InputError(
            f"{param} must be an http or https URL; got scheme '{scheme or 'none'}'.",
            code="unsupported_url",
            param=param,
        )


def fetch_to_file(url: str, dest: Path, settings: Settings, *, max_bytes: int, param: str) -> Path:
    check_url(url, settings, param)
    with httpx.stream("GET", url, follow_redirects=True, timeout=settings.fetch_read_timeout_s) as resp:
        if resp.status_code != 200:
            raise InputError(
                f"Fetching {param} answered HTTP {resp.status_code}.", code="fetch_failed", param=param
            )
        size = 0
        with dest.open("wb") as out:
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"{param} is larger than {max_bytes} bytes.", param=param)
                out.write(chunk)
    return dest


def post_json(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> int:
    check_url(url, settings, "callback_url")
    resp = httpx.post(
        url,
        content=body,
        headers={"Content-Type": "application/json", **headers},
        timeout=settings.fetch_read_timeout_s,
    )
    return resp.status_code
