"""A threaded HTTP server on loopback for the fetch tests, and a resolver that can be pointed anywhere."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Recorded:
    method: str
    path: str
    host: str | None
    body: bytes


@dataclass
class LoopbackServer:
    """Serves `routes` (path -> handler) on `address`; records every request it receives."""

    address: str = "127.0.0.1"
    port: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    tls: tuple[Path, Path] | None = None  # (certificate, key): serve https
    sni: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(Recorded(self.command, self.path, self.headers.get("Host"), body))
                route = server.routes.get(self.path.split("?")[0])
                if route is None:
                    send_bytes(self, b"not found", status=404)
                    return
                # The client hanging up is what the caps and timeouts are meant to do.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self)

            do_GET = _handle
            do_POST = _handle

        self.httpd = ThreadingHTTPServer((self.address, self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            context.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str, host: str | None = None) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host or self.address}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_bytes(
    handler: BaseHTTPRequestHandler,
    data: bytes,
    content_type: str = "application/octet-stream",
    status: int = 200,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def serve(data: bytes, content_type: str = "application/octet-stream") -> Route:
    return lambda h: send_bytes(h, data, content_type)


def redirect(location: str, status: int = 302) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def endless(chunk: bytes = b"\0" * 65536, limit: int = 1 << 30) -> Route:
    """A body without Content-Length that would go on for `limit` bytes; records how much it sent."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.send_header("Connection", "close")
        h.end_headers()
        sent = 0
        try:
            while sent < limit:
                h.wfile.write(chunk)
                sent += len(chunk)
        finally:
            route.sent = sent  # type: ignore[attr-defined]

    route.sent = 0  # type: ignore[attr-defined]
    return route


def declares_length(length: int) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        h.wfile.write(b"\0" * 1024)

    return route


def drip(interval_s: float, total_s: float = 10.0) -> Route:
    """Headers, then one byte every interval_s: never silent long enough for a read timeout."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        end = time.monotonic() + total_s
        while time.monotonic() < end:
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(interval_s)

    return route


def stall(seconds: float) -> Route:
    """Headers and a few bytes, then silence."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"x" * 10)
        h.wfile.flush()
        time.sleep(seconds)

    return route


class PointedResolver:
    """Replacement for socket.getaddrinfo: names in `table` resolve to the given addresses, in turn.

    `table[name]` is a list of answers; each lookup takes the next answer (the last one repeats), so a
    test can make a name change its address between lookups (DNS rebinding).
    """

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.lookups: dict[str, int] = {}
        self.real = socket.getaddrinfo

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.table:
            return self.real(host, port, family, type, proto, flags)
        count = self.lookups.get(name, 0)
        self.lookups[name] = count + 1
        answers = self.table[name]
        addresses = answers[min(count, len(answers) - 1)]
        result = []
        for address in addresses:
            fam = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port or 0, 0, 0) if fam == socket.AF_INET6 else (address, port or 0)
            result.append((fam, socket.SOCK_STREAM, 6, "", sockaddr))
        return result
