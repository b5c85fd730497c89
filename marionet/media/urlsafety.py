"""The one URL-safety rule: which addresses an untrusted URL may reach (server-side request forgery guard).

A host is resolved once; every address it resolves to must be public (or allowlisted by the administrator
through `MARIONET_URL_ALLOWLIST`), and the caller then connects to that very address, so a second DNS answer
cannot point the connection somewhere else.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache

from marionet.errors import InputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Allowlist:
    """Hosts (exact names, case-insensitive) and networks that may be fetched although not public."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)


@lru_cache(maxsize=32)
def parse_allowlist(value: str) -> Allowlist:
    """Parse `MARIONET_URL_ALLOWLIST`: comma-separated host names, IP addresses or CIDR networks."""
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.replace("[", "").replace("]", ""), strict=False))
        except ValueError:
            hosts.add(entry.lower().rstrip("."))
    return Allowlist(frozenset(hosts), tuple(networks))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, 6to4, Teredo, NAT64), which is where it really goes."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why `address` may not be fetched ("loopback", "private"...), or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = blocked_reason(embedded)
            if inner is not None:
                return f"{inner} (IPv4 {embedded} inside IPv6)"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order (IP literals resolve to themselves)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    return seen


def resolve_checked(host: str, port: int, allowlist: Allowlist, param: str) -> IPAddress:
    """Resolve `host` and return the address to connect to; raise InputError(url_not_allowed) if refused.

    Every resolved address must pass, so a name that answers with both a public and a private address
    cannot be used to reach the private one.
    """
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError, ValueError) as exc:
        raise InputError(
            f"{param}: the host '{host}' could not be resolved ({exc}).", code="fetch_failed", param=param
        ) from exc
    if not addresses:
        raise InputError(f"{param}: the host '{host}' has no address.", code="fetch_failed", param=param)
    if allowlist.allows_host(host):
        return addresses[0]
    for address in addresses:
        reason = blocked_reason(address)
        if reason is not None and not allowlist.allows_address(address):
            raise InputError(
                f"{param}: the host '{host}' resolves to {address}, a {reason} address; only public "
                "addresses may be fetched (an administrator can allow it with MARIONET_URL_ALLOWLIST).",
                code="url_not_allowed",
                param=param,
            )
    return addresses[0]
