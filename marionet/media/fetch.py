"""Outbound HTTP for untrusted URLs (inputs and callbacks): one URL-safety check, one fetcher.

- `check_url(url, settings, param)`: refuse a URL that may not be fetched (scheme, syntax, resolved address).
- `fetch_to_file(url, dest, settings, *, max_bytes, param)`: stream a GET into dest, following at most 3
  redirects (each hop checked again, never to another scheme), under a byte cap and timeouts.
- `post_json(url, body, headers, settings)`: POST a callback through the same checks; returns the status.

Every connection goes to the address that `check_url`'s resolution approved: a pinned network backend maps
the URL's host to that address, while the URL, the Host header and TLS SNI/certificate checks keep the name.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import certifi
import httpcore
import httpx

from marionet.config import Settings
from marionet.errors import InputError, PayloadTooLarge
from marionet.media.urlsafety import IPAddress, parse_allowlist, resolve_checked

MAX_REDIRECTS = 3
MAX_URL_LENGTH = 2048
_REDIRECTS = {301, 302, 303, 307, 308}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_USER_AGENT = "marionet-fetch/1"


def parse_url(url: str, param: str) -> httpx.URL:
    """Syntax and scheme check only: an absolute http(s) URL with a host. Raises InputError(unsupported_url)."""
    if not isinstance(url, str) or not url.strip():
        raise InputError(
            f"{param} is empty; it must be an http or https URL.", code="unsupported_url", param=param
        )
    if len(url) > MAX_URL_LENGTH:
        raise InputError(
            f"{param} is {len(url)} characters long; at most {MAX_URL_LENGTH} are accepted.",
            code="unsupported_url",
            param=param,
        )
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InputError(
            f"{param} contains whitespace or control characters.", code="unsupported_url", param=param
        )
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise InputError(f"{param} is not a valid URL ({exc}).", code="unsupported_url", param=param) from exc
    if parsed.scheme not in _DEFAULT_PORTS:
        raise InputError(
            f"{param} must be an http or https URL; got scheme '{parsed.scheme or 'none'}'.",
            code="unsupported_url",
            param=param,
        )
    if not parsed.host:
        raise InputError(f"{param} has no host.", code="unsupported_url", param=param)
    return parsed


def _host_port(url: httpx.URL) -> tuple[str, int]:
    return url.raw_host.decode("ascii"), url.port or _DEFAULT_PORTS[url.scheme]


def check_url(url: str, settings: Settings, param: str) -> IPAddress:
    """Raise InputError unless `url` may be fetched; return the checked address to connect to."""
    parsed = parse_url(url, param)
    host, port = _host_port(parsed)
    return resolve_checked(host, port, parse_allowlist(settings.url_allowlist), param)


class _DeadlinePassed(httpcore.ReadTimeout):
    """The whole exchange ran past MARIONET_FETCH_TOTAL_TIMEOUT_S (e.g. a body dripping in byte by byte)."""


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write also stops at the request's overall deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float, total_s: float) -> None:
        self._inner = inner
        self._deadline = deadline
        self._total_s = total_s

    def _passed(self) -> _DeadlinePassed:
        return _DeadlinePassed(f"the transfer did not finish within {self._total_s:g} s")

    def _bounded(self, timeout: float | None) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise self._passed()
        return remaining if timeout is None else min(timeout, remaining)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        bounded = self._bounded(timeout)
        try:
            return self._inner.read(max_bytes, bounded)
        except httpcore.ReadTimeout:
            if timeout is None or bounded < timeout:
                raise self._passed() from None
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        bounded = self._bounded(timeout)
        try:
            self._inner.write(buffer, bounded)
        except httpcore.WriteTimeout:
            if timeout is None or bounded < timeout:
                raise self._passed() from None
            raise

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._bounded(timeout))
        return _DeadlineStream(inner, self._deadline, self._total_s)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects a (host, port) only to the address that was checked for it; anything else is refused."""

    def __init__(self, deadline: float, total_s: float) -> None:
        self.pins: dict[tuple[str, int], IPAddress] = {}
        self._inner = httpcore.SyncBackend()
        self._deadline = deadline
        self._total_s = total_s

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        address = self.pins.get((host, port))
        if address is None:
            raise httpcore.ConnectError(f"{host}:{port} was not checked before connecting")
        stream = self._inner.connect_tcp(
            str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _DeadlineStream(stream, self._deadline, self._total_s)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _Session:
    """One outbound exchange (a fetch with its redirects, or a callback): a pool that only reaches pins."""

    def __init__(self, settings: Settings, param: str, total_s: float) -> None:
        self.settings = settings
        self.param = param
        self.total_s = total_s
        self.allowlist = parse_allowlist(settings.url_allowlist)
        self.backend = _PinnedBackend(time.monotonic() + total_s, total_s)
        context = ssl.create_default_context(cafile=certifi.where())
        if settings.fetch_ca_bundle is not None:
            context.load_verify_locations(cafile=str(settings.fetch_ca_bundle))
        self.pool = httpcore.ConnectionPool(
            ssl_context=context,
            network_backend=self.backend,
            retries=0,
            max_connections=2,
        )

    def pin(self, url: httpx.URL) -> None:
        host, port = _host_port(url)
        self.backend.pins[(host, port)] = resolve_checked(host, port, self.allowlist, self.param)

    @contextmanager
    def stream(
        self, method: str, url: httpx.URL, headers: dict[str, str], body: bytes | None = None
    ) -> Iterator[httpcore.Response]:
        self.pin(url)
        timeouts = {
            "connect": self.settings.fetch_connect_timeout_s,
            "read": self.settings.fetch_read_timeout_s,
            "write": self.settings.fetch_read_timeout_s,
            "pool": self.settings.fetch_connect_timeout_s,
        }
        all_headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity", **headers}
        with self.pool.stream(
            method,
            httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=list(all_headers.items()),
            content=body,
            extensions={"timeout": timeouts},
        ) as response:
            yield response

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def _network_errors(settings: Settings, param: str) -> Iterator[None]:
    """Turn transport failures into InputError codes a user can act on."""
    try:
        yield
    except httpcore.TimeoutException as exc:
        if isinstance(exc, _DeadlinePassed):
            detail = f"{exc} (MARIONET_FETCH_TOTAL_TIMEOUT_S)"
        elif isinstance(exc, httpcore.ConnectTimeout):
            detail = f"no connection within the connect timeout of {settings.fetch_connect_timeout_s:g} s"
        else:
            detail = f"no data for the read timeout of {settings.fetch_read_timeout_s:g} s"
        raise InputError(f"Fetching {param} timed out: {detail}.", code="fetch_timeout", param=param) from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise InputError(f"Fetching {param} failed: {exc}.", code="fetch_failed", param=param) from exc


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:g} MB"


def _save_body(response: httpcore.Response, dest: Path, max_bytes: int, param: str) -> int:
    """Stream the body into dest, stopping the moment it passes max_bytes. Returns the size."""
    declared = _header(response, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"{param} declares {int(declared)} bytes; the limit is {max_bytes} bytes ({_mb(max_bytes)}).",
            param=param,
        )
    encoding = (_header(response, b"content-encoding") or "identity").lower()
    if encoding != "identity":
        raise InputError(
            f"Fetching {param}: the server sent a '{encoding}'-encoded body although none was accepted.",
            code="fetch_failed",
            param=param,
        )
    size = 0
    with dest.open("wb") as out:
        for chunk in response.iter_stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(
                    f"{param} is larger than the limit of {max_bytes} bytes ({_mb(max_bytes)}): "
                    f"stopped after receiving {size} bytes.",
                    param=param,
                )
            out.write(chunk)
    return size


def fetch_to_file(url: str, dest: Path, settings: Settings, *, max_bytes: int, param: str) -> Path:
    """GET `url` into `dest` under every rule of the module docstring; dest only exists if it all succeeded."""
    current = parse_url(url, param)
    partial = dest.with_name(dest.name + ".part")
    try:
        with (
            _Session(settings, param, settings.fetch_total_timeout_s) as session,
            _network_errors(settings, param),
        ):
            for hop in range(MAX_REDIRECTS + 1):
                with session.stream("GET", current, {}) as response:
                    if response.status in _REDIRECTS:
                        current = _next_hop(current, _header(response, b"location"), hop, param)
                        continue
                    if response.status != 200:
                        raise InputError(
                            f"Fetching {param} answered HTTP {response.status}; expected 200.",
                            code="fetch_failed",
                            param=param,
                        )
                    _save_body(response, partial, max_bytes, param)
                partial.replace(dest)
                return dest
    finally:
        partial.unlink(missing_ok=True)
    raise AssertionError("unreachable: the redirect loop returns or raises")


def _next_hop(current: httpx.URL, location: str | None, hop: int, param: str) -> httpx.URL:
    """The redirect target, if this redirect may be followed."""
    if not location:
        raise InputError(
            f"Fetching {param}: a redirect without a Location.", code="fetch_failed", param=param
        )
    try:
        target = current.join(location)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise InputError(
            f"Fetching {param}: the redirect to '{location[:200]}' is not a valid URL.",
            code="fetch_failed",
            param=param,
        ) from exc
    if target.scheme != current.scheme:
        raise InputError(
            f"{param} redirected from {current.scheme}: to {target.scheme or 'no'}: scheme; "
            "a redirect may not change the scheme.",
            code="redirect_not_allowed",
            param=param,
        )
    if hop >= MAX_REDIRECTS:
        raise InputError(
            f"{param} redirected more than {MAX_REDIRECTS} times; at most {MAX_REDIRECTS} redirects are followed.",
            code="too_many_redirects",
            param=param,
        )
    return parse_url(str(target), param)


def post_json(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> int:
    """POST `body` as JSON to a callback URL through the same safety rules; return the HTTP status.

    Redirects are not followed (their status is returned). Raises InputError for a refused URL or a network
    failure (codes as for fetches, param `callback_url`).
    """
    param = "callback_url"
    target = parse_url(url, param)
    total_s = settings.fetch_connect_timeout_s + settings.fetch_read_timeout_s
    with _Session(settings, param, total_s) as session, _network_errors(settings, param):
        request_headers = {"Content-Type": "application/json", **headers}
        with session.stream("POST", target, request_headers, body) as response:
            return response.status
