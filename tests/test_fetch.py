"""fetch_to_file / post_json against a real HTTP server on loopback.

Tests that need the server to be reachable allowlist it; the others run with the allowlist off and prove the
refusal happens before any byte is sent (the server records every request it gets).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest
from ingest_http import (
    LoopbackServer,
    PointedResolver,
    declares_length,
    drip,
    endless,
    redirect,
    send_bytes,
    serve,
    stall,
)

from marionet.config import Settings
from marionet.errors import InputError, PayloadTooLarge
from marionet.media.fetch import MAX_REDIRECTS, fetch_to_file, post_json


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


def _settings(tmp_path, allow: str = "127.0.0.1", **overrides) -> Settings:
    values = {"fetch_connect_timeout_s": 2.0, "fetch_read_timeout_s": 2.0, "fetch_total_timeout_s": 20.0}
    values.update(overrides)
    return Settings(data_dir=tmp_path, url_allowlist=allow, **values)


def test_fetches_bytes_from_an_allowlisted_server(tmp_path, server):
    payload = bytes(range(256)) * 1000
    server.routes["/clip.mp4"] = serve(payload, "video/mp4")
    dest = tmp_path / "clip"
    fetch_to_file(server.url("/clip.mp4"), dest, _settings(tmp_path), max_bytes=10**6, param="video_url")
    assert dest.read_bytes() == payload
    assert server.requests[0].host == f"127.0.0.1:{server.port}"
    assert list(tmp_path.glob("*.part")) == []


def test_loopback_is_refused_before_connecting_without_allowlist(tmp_path, server):
    server.routes["/clip.mp4"] = serve(b"secret")
    with pytest.raises(InputError) as err:
        fetch_to_file(
            server.url("/clip.mp4"),
            tmp_path / "x",
            _settings(tmp_path, allow=""),
            max_bytes=100,
            param="video_url",
        )
    assert err.value.code == "url_not_allowed" and "127.0.0.1, a loopback" in err.value.message
    assert server.requests == []
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/iam/", "http://10.0.0.1/", "http://[::1]/"]
)
def test_metadata_and_private_addresses_are_refused(tmp_path, url):
    with pytest.raises(InputError) as err:
        fetch_to_file(url, tmp_path / "x", _settings(tmp_path, allow=""), max_bytes=100, param="image_url")
    assert err.value.code == "url_not_allowed"


def test_redirect_from_public_name_to_private_address_is_refused(tmp_path, server, monkeypatch):
    # public.example is allowlisted by name and points at the server; its redirect to the bare loopback
    # address is a new hop, checked on its own, and refused.
    resolver = PointedResolver({"public.example": [["127.0.0.1"]]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    server.routes["/start"] = redirect(server.url("/internal-secret"))
    server.routes["/internal-secret"] = serve(b"secret")
    with pytest.raises(InputError) as err:
        fetch_to_file(
            server.url("/start", host="public.example"),
            tmp_path / "x",
            _settings(tmp_path, allow="public.example"),
            max_bytes=100,
            param="image_url",
        )
    assert err.value.code == "url_not_allowed" and "127.0.0.1, a loopback" in err.value.message
    assert server.paths() == ["/start"]
    # The first hop went to the pinned address with the name kept in the Host header.
    assert server.requests[0].host == f"public.example:{server.port}"


def test_redirect_to_a_name_that_resolves_privately_is_refused(tmp_path, server, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", PointedResolver({"internal.example": [["10.0.0.8"]]}))
    server.routes["/start"] = redirect("http://internal.example/admin")
    with pytest.raises(InputError) as err:
        fetch_to_file(
            server.url("/start"), tmp_path / "x", _settings(tmp_path), max_bytes=100, param="video_url"
        )
    assert err.value.code == "url_not_allowed" and "10.0.0.8" in err.value.message


def test_follows_up_to_three_redirects_and_refuses_a_fourth(tmp_path, server):
    for i in range(4):
        server.routes[f"/r{i}"] = redirect(f"/r{i + 1}", status=(301, 302, 307, 308)[i])
    server.routes["/r4"] = serve(b"end")
    settings = _settings(tmp_path)

    fetch_to_file(
        server.url(f"/r{4 - MAX_REDIRECTS}"), tmp_path / "ok", settings, max_bytes=100, param="video_url"
    )
    assert (tmp_path / "ok").read_bytes() == b"end"

    server.requests.clear()
    with pytest.raises(InputError) as err:
        fetch_to_file(server.url("/r0"), tmp_path / "no", settings, max_bytes=100, param="video_url")
    assert err.value.code == "too_many_redirects" and "more than 3" in err.value.message
    assert server.paths() == ["/r0", "/r1", "/r2", "/r3"]
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "location", ["ftp://127.0.0.1/clip.mp4", "file:///etc/passwd", "https://127.0.0.1/clip.mp4"]
)
def test_redirect_to_another_scheme_is_refused(tmp_path, server, location):
    server.routes["/start"] = redirect(location)
    with pytest.raises(InputError) as err:
        fetch_to_file(
            server.url("/start"), tmp_path / "x", _settings(tmp_path), max_bytes=100, param="video_url"
        )
    assert err.value.code == "redirect_not_allowed"
    assert f"to {location.split(':')[0]}:" in err.value.message


def test_endless_body_stops_at_the_byte_cap(tmp_path, server):
    route = endless(limit=64 * 2**20)
    server.routes["/big.mp4"] = route
    cap = 256 * 1024
    with pytest.raises(PayloadTooLarge) as err:
        fetch_to_file(
            server.url("/big.mp4"), tmp_path / "x", _settings(tmp_path), max_bytes=cap, param="video_url"
        )
    assert err.value.status == 413 and err.value.code == "file_too_large"
    assert f"limit of {cap} bytes" in err.value.message
    received = int(err.value.message.split("stopped after receiving ")[1].split()[0])
    assert cap < received <= cap + 65536
    assert not (tmp_path / "x").exists() and list(tmp_path.glob("*.part")) == []


def test_declared_oversize_is_refused_before_reading(tmp_path, server):
    server.routes["/big.mp4"] = declares_length(200 * 2**20)
    with pytest.raises(PayloadTooLarge) as err:
        fetch_to_file(
            server.url("/big.mp4"),
            tmp_path / "x",
            _settings(tmp_path),
            max_bytes=100 * 2**20,
            param="video_url",
        )
    assert f"declares {200 * 2**20} bytes; the limit is {100 * 2**20} bytes (100 MB)" in err.value.message


def test_slow_drip_body_hits_the_deadline(tmp_path, server):
    # One byte every 0.2 s never trips the 2 s read timeout; the whole-transfer deadline stops it.
    server.routes["/drip"] = drip(0.2)
    settings = _settings(tmp_path, fetch_read_timeout_s=2.0, fetch_total_timeout_s=1.0)
    with pytest.raises(InputError) as err:
        fetch_to_file(server.url("/drip"), tmp_path / "x", settings, max_bytes=10**6, param="video_url")
    assert err.value.code == "fetch_timeout" and "did not finish within 1 s" in err.value.message
    assert not (tmp_path / "x").exists()


def test_silent_body_hits_the_read_timeout(tmp_path, server):
    server.routes["/stall"] = stall(3.0)
    settings = _settings(tmp_path, fetch_read_timeout_s=0.5)
    with pytest.raises(InputError) as err:
        fetch_to_file(server.url("/stall"), tmp_path / "x", settings, max_bytes=10**6, param="video_url")
    assert err.value.code == "fetch_timeout" and "no data for the read timeout of 0.5 s" in err.value.message


def test_http_errors_and_encoded_bodies_are_fetch_failures(tmp_path, server):
    def gzipped(h):
        h.send_response(200)
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", "3")
        h.end_headers()
        h.wfile.write(b"abc")

    server.routes["/gz"] = gzipped
    settings = _settings(tmp_path)
    with pytest.raises(InputError) as err:
        fetch_to_file(server.url("/missing"), tmp_path / "x", settings, max_bytes=100, param="image_url")
    assert err.value.code == "fetch_failed" and "HTTP 404" in err.value.message
    with pytest.raises(InputError) as err:
        fetch_to_file(server.url("/gz"), tmp_path / "x", settings, max_bytes=100, param="image_url")
    assert err.value.code == "fetch_failed" and "'gzip'-encoded" in err.value.message


def test_connects_to_the_checked_address_not_a_rebound_one(tmp_path, monkeypatch):
    # rebind.example answers 127.0.0.1 (allowlisted) the first time, then 127.0.0.2 (not allowed: another
    # server on the same port). A client that resolved the name again to connect would reach the second.
    evil = LoopbackServer("127.0.0.2")
    good = LoopbackServer("127.0.0.1", port=evil.port)
    try:
        good.routes["/a.png"] = serve(b"from the checked address")
        evil.routes["/a.png"] = serve(b"from the rebound address")
        resolver = PointedResolver({"rebind.example": [["127.0.0.1"], ["127.0.0.2"]]})
        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        dest = tmp_path / "a"
        fetch_to_file(
            f"http://rebind.example:{evil.port}/a.png",
            dest,
            _settings(tmp_path, allow="127.0.0.1/32"),
            max_bytes=100,
            param="image_url",
        )
        assert dest.read_bytes() == b"from the checked address"
        assert evil.requests == [] and good.requests[0].host == f"rebind.example:{evil.port}"
        assert resolver.lookups["rebind.example"] == 1
    finally:
        good.close()
        evil.close()


def test_post_json_delivers_and_does_not_follow_redirects(tmp_path, server):
    def ok(h):
        send_bytes(h, b"{}", "application/json")

    server.routes["/hook"] = ok
    server.routes["/moved"] = redirect("/hook", status=307)
    settings = _settings(tmp_path)
    body = json.dumps({"id": "task-1", "status": "completed"}).encode()
    assert post_json(server.url("/hook"), body, {"X-Marionet-Signature": "abc"}, settings) == 200
    assert json.loads(server.requests[0].body) == {"id": "task-1", "status": "completed"}
    assert post_json(server.url("/moved"), body, {}, settings) == 307
    assert server.paths() == ["/hook", "/moved"]


def test_post_json_uses_the_same_safety_check(tmp_path, server):
    server.routes["/hook"] = serve(b"{}")
    with pytest.raises(InputError) as err:
        post_json(server.url("/hook"), b"{}", {}, _settings(tmp_path, allow=""))
    assert err.value.code == "url_not_allowed" and err.value.param == "callback_url"
    with pytest.raises(InputError) as err:
        post_json("file:///tmp/x", b"{}", {}, _settings(tmp_path, allow=""))
    assert err.value.code == "unsupported_url"
    assert server.requests == []


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for public.example (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key)]
        + ["-out", str(cert), "-subj", "/CN=public.example", "-addext", "subjectAltName=DNS:public.example"],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_to_a_pinned_address_keeps_the_name_for_sni_and_certificate(tmp_path, certificate, monkeypatch):
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        PointedResolver({"public.example": [["127.0.0.1"]], "wrong.example": [["127.0.0.1"]]}),
    )
    server = LoopbackServer(tls=certificate)
    try:
        server.routes["/a.png"] = serve(b"over tls")
        settings = _settings(tmp_path, allow="public.example,wrong.example", fetch_ca_bundle=certificate[0])
        dest = tmp_path / "a"
        fetch_to_file(
            server.url("/a.png", host="public.example"), dest, settings, max_bytes=100, param="image_url"
        )
        assert dest.read_bytes() == b"over tls"
        assert server.sni == ["public.example"] and server.requests[0].host == f"public.example:{server.port}"

        # The certificate is still checked against the name: another name on the same address fails.
        with pytest.raises(InputError) as err:
            fetch_to_file(
                server.url("/a.png", host="wrong.example"), dest, settings, max_bytes=100, param="image_url"
            )
        assert err.value.code == "fetch_failed" and "certificate" in err.value.message.lower()
        # And without the private CA, the self-signed certificate is refused.
        with pytest.raises(InputError) as err:
            fetch_to_file(
                server.url("/a.png", host="public.example"),
                dest,
                _settings(tmp_path, allow="public.example"),
                max_bytes=100,
                param="image_url",
            )
        assert err.value.code == "fetch_failed" and "certificate verify failed" in err.value.message
    finally:
        server.close()


def test_unanswered_connection_hits_the_connect_timeout(tmp_path):
    # A listener that never accepts, its one-slot queue already taken: the next handshake gets no answer.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    try:
        settings = _settings(tmp_path, fetch_connect_timeout_s=0.5, fetch_read_timeout_s=5.0)
        with pytest.raises(InputError) as err:
            fetch_to_file(
                f"http://127.0.0.1:{port}/a.mp4", tmp_path / "x", settings, max_bytes=100, param="video_url"
            )
        assert err.value.code == "fetch_timeout"
        assert "no connection within the connect timeout of 0.5 s" in err.value.message
    finally:
        filler.close()
        listener.close()
