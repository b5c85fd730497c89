"""The one URL-safety check: every refused address kind, with the allowlist off, and what the allowlist opens."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from ingest_http import PointedResolver

from marionet.config import Settings
from marionet.errors import InputError
from marionet.media.fetch import check_url
from marionet.media.urlsafety import blocked_reason, parse_allowlist


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, url_allowlist="")


@pytest.fixture
def resolver(monkeypatch) -> PointedResolver:
    pointed = PointedResolver(
        {
            "public.example": [["93.184.216.34"]],
            "v6.example": [["2606:2800:220:1:248:1893:25c8:1946"]],
            "private.example": [["10.1.2.3"]],
            "metadata.example": [["169.254.169.254"]],
            "mixed.example": [["93.184.216.34", "192.168.0.7"]],
            "mapped.example": [["::ffff:10.0.0.1"]],
        }
    )
    monkeypatch.setattr(socket, "getaddrinfo", pointed)
    return pointed


@pytest.mark.parametrize(
    "url, address, reason",
    [
        ("http://127.0.0.1/", "127.0.0.1", "loopback"),
        ("http://127.9.9.9:8080/x", "127.9.9.9", "loopback"),
        ("http://2130706433/", "127.0.0.1", "loopback"),  # decimal spelling of 127.0.0.1
        ("http://10.0.0.1/", "10.0.0.1", "private"),
        ("http://172.16.5.4/", "172.16.5.4", "private"),
        ("http://192.168.1.1/", "192.168.1.1", "private"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "link-local"),
        ("http://0.0.0.0/", "0.0.0.0", "unspecified"),
        ("http://224.0.0.251/", "224.0.0.251", "multicast"),
        ("http://240.0.0.1/", "240.0.0.1", "private"),
        ("http://100.64.0.1/", "100.64.0.1", "not globally routable"),
        ("https://[::1]/", "::1", "loopback"),
        ("http://[::]/", "::", "unspecified"),
        ("http://[fc00::1]/", "fc00::1", "private"),
        ("http://[fd12:3456::1]/", "fd12:3456::1", "private"),
        ("http://[fe80::1]/", "fe80::1", "link-local"),
        ("http://[ff02::1]/", "ff02::1", "multicast"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "::ffff:a9fe:a9fe", "link-local"),
        ("http://[2002:7f00:1::1]/", "2002:7f00:1::1", "loopback"),  # 6to4 wrapping 127.0.0.1
        ("http://private.example/a.png", "10.1.2.3", "private"),
        ("http://metadata.example/", "169.254.169.254", "link-local"),
        ("http://mixed.example/", "192.168.0.7", "private"),
        ("http://mapped.example/", "::ffff:a00:1", "private"),
    ],
)
def test_refuses_non_public_addresses(settings, resolver, url, address, reason):
    with pytest.raises(InputError) as err:
        check_url(url, settings, "video_url")
    assert err.value.code == "url_not_allowed" and err.value.status == 400
    assert err.value.param == "video_url"
    assert f"resolves to {ipaddress.ip_address(address)}, a {reason}" in err.value.message
    assert "MARIONET_URL_ALLOWLIST" in err.value.message


def test_localhost_name_is_refused(settings):
    with pytest.raises(InputError) as err:
        check_url("http://localhost:8000/v1/secret", settings, "image_url")
    assert err.value.code == "url_not_allowed" and "loopback" in err.value.message


def test_public_addresses_pass_and_are_the_pinned_ones(settings, resolver):
    assert check_url("https://public.example/img.png", settings, "image_url") == ipaddress.ip_address(
        "93.184.216.34"
    )
    assert (
        str(check_url("http://v6.example/v.mp4", settings, "video_url"))
        == "2606:2800:220:1:248:1893:25c8:1946"
    )
    assert resolver.lookups == {"public.example": 1, "v6.example": 1}


@pytest.mark.parametrize(
    "url, scheme",
    [
        ("file:///etc/passwd", "file"),
        ("ftp://example.com/a.mp4", "ftp"),
        ("gopher://example.com:70/_x", "gopher"),
        ("javascript:alert(1)", "javascript"),
        ("dict://127.0.0.1:11211/", "dict"),
        ("example.com/a.png", "none"),
    ],
)
def test_refuses_other_schemes(settings, url, scheme):
    with pytest.raises(InputError) as err:
        check_url(url, settings, "image_url")
    assert err.value.code == "unsupported_url"
    assert f"got scheme '{scheme}'" in err.value.message


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("", "empty"),
        ("http://", "no host"),
        ("http://exa mple.com/", "whitespace"),
        ("http://a/" + "x" * 2100, "2048"),
    ],
)
def test_refuses_malformed_urls(settings, url, fragment):
    with pytest.raises(InputError) as err:
        check_url(url, settings, "image_url")
    assert err.value.code == "unsupported_url" and fragment in err.value.message


def test_unresolvable_host_is_a_fetch_failure(settings):
    with pytest.raises(InputError) as err:
        check_url("http://no-such-host.invalid/a.png", settings, "image_url")
    assert err.value.code == "fetch_failed" and "could not be resolved" in err.value.message


def test_allowlist_opens_hosts_and_networks_and_nothing_else(tmp_path, resolver):
    by_host = Settings(data_dir=tmp_path, url_allowlist="private.example, localhost")
    assert str(check_url("http://private.example/", by_host, "image_url")) == "10.1.2.3"
    with pytest.raises(InputError, match="10.0.0.1"):
        check_url("http://10.0.0.1/", by_host, "image_url")

    by_net = Settings(data_dir=tmp_path, url_allowlist="10.0.0.0/8,fd00::/8, 127.0.0.1")
    assert str(check_url("http://10.200.0.1/", by_net, "image_url")) == "10.200.0.1"
    assert str(check_url("http://[fd00::5]/", by_net, "image_url")) == "fd00::5"
    assert str(check_url("http://127.0.0.1:9/", by_net, "image_url")) == "127.0.0.1"
    with pytest.raises(InputError, match="127.0.0.2"):
        check_url("http://127.0.0.2/", by_net, "image_url")
    with pytest.raises(InputError, match="169.254.169.254"):
        check_url("http://169.254.169.254/", by_net, "image_url")


def test_allowlist_parsing():
    allow = parse_allowlist(" Media.Internal. ,10.0.0.0/8,,::1, [fd00::]/8 ")
    assert allow.hosts == frozenset({"media.internal"})
    assert [str(n) for n in allow.networks] == ["10.0.0.0/8", "::1/128", "fd00::/8"]
    assert allow.allows_host("MEDIA.internal")


def test_blocked_reason_passes_public_addresses():
    for public in ("8.8.8.8", "93.184.216.34", "2001:4860:4860::8888", "2a00:1450:4001::1"):
        assert blocked_reason(ipaddress.ip_address(public)) is None
