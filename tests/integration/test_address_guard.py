"""The SSRF guard: address classes, resolution, and pinning the connection to the vetted address."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from channels.address_guard import (
    BlockedAddressError,
    address_class,
    pinned_request_target,
    vetted_addresses,
)
from channels.base import ChannelError, OutboundMessage
from channels.webhook import WebhookChannel
from tests.servers import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"a-test-secret-that-is-long-enough!").decode()
MESSAGE = OutboundMessage(
    notification_id="n-1",
    idempotency_key="idem-1",
    severity="critical",
    subject="Database down",
    body="db1 is not answering",
    created_at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
)
Factory = Callable[..., WebhookChannel]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    made: list[WebhookChannel] = []

    def factory(url: str, **kwargs: object) -> WebhookChannel:
        made.append(WebhookChannel("hook", url, SECRET, timeout_s=5.0, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield factory
    for channel in made:
        await channel.aclose()


async def _refusal(channel: WebhookChannel) -> BlockedAddressError:
    with pytest.raises(BlockedAddressError) as info:
        await channel.send(MESSAGE)
    return info.value


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::7f00:1", "loopback"),
        ("2002:7f00:1::", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fd12:3456::1", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "reserved"),
        ("2001:db8::1", "reserved"),
        ("8.8.8.8", None),
        ("172.32.0.1", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_classes(address: str, expected: str | None) -> None:
    """Each special-purpose range is named; globally routable addresses pass."""
    assert address_class(ipaddress.ip_address(address)) == expected


async def test_loopback_refused_by_default(receiver: WebhookReceiver, make: Factory) -> None:
    """http://127.0.0.1 is a permanent error naming the class, and nothing reaches the receiver."""
    error = await _refusal(make(receiver.url))
    assert error.permanent
    assert error.address_class == "loopback"
    assert "127.0.0.1 is a loopback address" in str(error)
    assert receiver.requests == []


async def test_loopback_allowed_with_allow_private(receiver: WebhookReceiver, make: Factory) -> None:
    """allow_private lifts the guard for this channel."""
    assert (await make(receiver.url, allow_private=True).send(MESSAGE)).detail == "HTTP 200 OK"
    await receiver.wait_for_async(1)


async def test_localhost_name_is_refused(receiver: WebhookReceiver, make: Factory) -> None:
    """A host name that resolves to loopback is refused after resolution."""
    error = await _refusal(make(f"http://localhost:{receiver.port}/hook"))
    assert error.address_class == "loopback"
    assert receiver.requests == []


@pytest.mark.parametrize("host", ["[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"])
async def test_ipv6_loopback_is_refused(make: Factory, host: str) -> None:
    """IPv6 loopback, and IPv4 loopback written as IPv6, are refused."""
    assert (await _refusal(make(f"http://{host}:9/hook"))).address_class == "loopback"


async def test_metadata_service_is_refused(make: Factory) -> None:
    """The cloud metadata address is link-local."""
    error = await _refusal(make("http://169.254.169.254/latest/meta-data/"))
    assert "link-local" in str(error)


async def test_every_resolved_address_must_be_allowed(make: Factory) -> None:
    """One private answer among public ones refuses the destination."""

    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.5"]

    error = await _refusal(make("https://hooks.example.com/x", resolver=mixed))
    assert (error.address_class, str(error.address)) == ("private", "10.0.0.5")


async def test_connection_goes_to_the_vetted_address(receiver: WebhookReceiver, make: Factory) -> None:
    """The name is resolved once per send and the connection uses that answer (no second lookup)."""
    lookups: list[str] = []

    async def once_then_elsewhere(host: str, port: int) -> list[str]:
        lookups.append(host)
        # A rebinding server would answer differently the next time; there is no next time.
        return ["127.0.0.1"] if len(lookups) == 1 else ["127.0.0.2"]

    url = f"http://rebind.test:{receiver.port}/hook"
    await make(url, allow_private=True, resolver=once_then_elsewhere).send(MESSAGE)
    [request] = await receiver.wait_for_async(1)
    assert lookups == ["rebind.test"]
    assert request.headers["host"] == f"rebind.test:{receiver.port}"


def test_https_target_carries_host_and_sni() -> None:
    """The pinned URL has the IP; Host keeps the configured name and port; SNI names the host."""
    url = httpx.URL("https://hooks.example.com:8443/in?sig=abc")
    target = pinned_request_target(url, ipaddress.ip_address("2606:4700::1"))
    assert str(target.url) == "https://[2606:4700::1]:8443/in?sig=abc"
    assert target.headers == {"Host": "hooks.example.com:8443"}
    assert target.extensions == {"sni_hostname": "hooks.example.com"}


async def test_request_on_the_wire_is_pinned(make: Factory) -> None:
    """What the transport is handed: the vetted IP in the URL, the name in Host and sni_hostname."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    async def public(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    channel = make("https://hooks.example.com/in", resolver=public, transport=httpx.MockTransport(handler))
    await channel.send(MESSAGE)
    [request] = seen
    assert request.url.host == "93.184.216.34"
    assert request.headers["Host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"


async def test_failed_lookup_is_transient(make: Factory) -> None:
    """A name that does not resolve may resolve later: transient, a service fault."""

    async def nxdomain(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    with pytest.raises(ChannelError) as info:
        await make("https://nowhere.test/x", resolver=nxdomain).send(MESSAGE)
    assert not info.value.permanent
    assert info.value.service_fault
    assert "cannot resolve nowhere.test" in str(info.value)


async def test_ip_literal_is_not_resolved() -> None:
    """An address in the URL is vetted as is, without a lookup."""

    async def never(host: str, port: int) -> list[str]:
        raise AssertionError("resolver called for a literal")

    [address] = await vetted_addresses("8.8.8.8", 443, allow_private=False, resolve=never)
    assert str(address) == "8.8.8.8"
