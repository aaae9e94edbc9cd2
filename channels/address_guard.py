"""SSRF guard for outbound HTTP: vet every address a host resolves to, then connect to a vetted one.

A webhook URL comes from configuration, but what its host resolves to is decided by whoever runs
its DNS. Without a guard, a URL (or a DNS answer changed after the URL was reviewed) can make the
daemon POST signed notifications to the cloud metadata service (169.254.169.254), to an admin
port on loopback, or into the private network.

By default a destination is refused when *any* resolved address is loopback, link-local, private
(RFC 1918, RFC 6598 shared space, IPv6 ULA), multicast, unspecified or otherwise not globally
routable (reserved, documentation, benchmarking: IANA's special-purpose registries,
https://www.iana.org/assignments/iana-ipv4-special-registry/ and .../iana-ipv6-special-registry/).
IPv4 addresses embedded in IPv6 (``::ffff:127.0.0.1``, 6to4) are judged as the IPv4 address.

DNS rebinding: resolving once to vet and letting the HTTP client resolve again to connect would
check one answer and use another. So the connection goes to the vetted IP itself: the webhook's
own client (:mod:`channels.http1`) connects to it and names the host only in ``Host`` and TLS (SNI
and the certificate check); for an httpx transport, :func:`pinned_request_target` rewrites the URL
to the vetted IP and carries the name in the ``Host`` header and in httpcore's ``sni_hostname``
request extension (https://www.encode.io/httpcore/extensions/#request-extensions), so TLS still
verifies the certificate against the configured host name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from channels.base import ChannelError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> addresses``; injected in tests, :func:`system_resolver` otherwise.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# RFC 6598 shared address space (carrier-grade NAT): inside someone's network, never the internet.
_SHARED_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
_RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_ULA = ipaddress.IPv6Network("fc00::/7")
# RFC 6052 NAT64 well-known prefix: a NAT64 gateway forwards 64:ff9b::7f00:1 to 127.0.0.1.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class BlockedAddressError(ChannelError):
    """The destination resolves to an address the SSRF guard refuses."""

    def __init__(self, host: str, address: IPAddress, address_class: str) -> None:
        super().__init__(
            f"refused to send to {host}: {address} is a {address_class} address"
            " (set allow_private: true on this channel to allow it)",
            permanent=True,
        )
        self.address = address
        self.address_class = address_class


def address_class(address: IPAddress) -> str | None:
    """The reason ``address`` is refused (``"loopback"``, ``"private"``...), or None if it is public."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return address_class(embedded)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", _is_private_range(address)),
        ("reserved", address.is_reserved or not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def _is_private_range(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv4Address):
        return address in _SHARED_SPACE or any(address in net for net in _RFC1918)
    return address in _ULA


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (getaddrinfo, in the loop's executor)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def vetted_addresses(
    host: str, port: int, *, allow_private: bool, resolve: Resolver = system_resolver
) -> list[IPAddress]:
    """The addresses to connect to for ``host``, all of them allowed; raise if any is refused.

    An IP literal is not resolved. A failed lookup is transient (DNS can recover); a refused
    address is permanent (:class:`BlockedAddressError`).
    """
    addresses = await _resolve(host, port, resolve)
    if not allow_private:
        for address in addresses:
            if (reason := address_class(address)) is not None:
                raise BlockedAddressError(host, address, reason)
    return addresses


async def _resolve(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass  # a name, not a literal: resolve it
    try:
        answers = await resolve(host, port)
    except OSError as exc:
        raise ChannelError(f"cannot resolve {host}: {exc.strerror or exc}", service_fault=True) from exc
    addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answers]
    if not addresses:
        raise ChannelError(f"cannot resolve {host}: no addresses", service_fault=True)
    return addresses


@dataclass(frozen=True, slots=True)
class PinnedTarget:
    """Where to connect (the URL with the vetted IP) and how to name the real host on the wire."""

    url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, str]


def pinned_request_target(url: httpx.URL, address: IPAddress) -> PinnedTarget:
    """``url`` rewritten to ``address``, with ``Host`` and (for https) SNI naming the original host."""
    pinned = url.copy_with(host=str(address))
    host_header = url.netloc.decode("ascii")
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return PinnedTarget(pinned, {"Host": host_header}, extensions)


def effective_port(url: httpx.URL) -> int:
    """The URL's port, or the scheme's default (what the connection will use)."""
    return url.port or (443 if url.scheme == "https" else 80)
