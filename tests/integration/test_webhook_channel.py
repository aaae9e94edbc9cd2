"""WebhookChannel against a real HTTP receiver on loopback."""

from __future__ import annotations

import base64
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from channels.base import ChannelConfigError, ChannelError, OutboundMessage
from channels.webhook import WebhookChannel
from tests.servers import ScriptedResponse, WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"a-test-secret-that-is-long-enough!").decode()
NOW = 1_714_566_600.0


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


Factory = Callable[..., WebhookChannel]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    """Build channels that are closed after the test (an owned httpx client must be closed)."""
    made: list[WebhookChannel] = []

    def factory(*args: object, **kwargs: object) -> WebhookChannel:
        made.append(WebhookChannel(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield factory
    for channel in made:
        await channel.aclose()


def _message(**changes: object) -> OutboundMessage:
    fields: dict[str, object] = {
        "notification_id": "n-7",
        "idempotency_key": "idem-7",
        "severity": "critical",
        "subject": "Database down",
        "body": "db1 is not answering",
        "created_at": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        "source": "grafana",
        "recipients": ("+15550100",),
        "labels": {"host": "db1"},
        "attempt": 2,
        "provider_state": "outage",
    }
    return OutboundMessage(**{**fields, **changes})  # type: ignore[arg-type]


async def _failure(channel: WebhookChannel) -> ChannelError:
    with pytest.raises(ChannelError) as info:
        await channel.send(_message())
    return info.value


async def test_delivers_signed_json_verified_by_reference_library(receiver: WebhookReceiver) -> None:
    """The POST verifies with standardwebhooks and carries the documented body and headers."""
    async with httpx.AsyncClient() as client:
        channel = WebhookChannel("hook", receiver.url, SECRET, headers={"X-Team": "ops"}, client=client)
        receipt = await channel.send(_message())
    [request] = await receiver.wait_for_async(1)
    body = Webhook(SECRET).verify(request.body, dict(request.headers))
    assert receipt.detail == "HTTP 200 OK"
    assert request.method == "POST"
    assert request.headers["webhook-id"] == request.headers["idempotency-key"] == "idem-7"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "backchannel/0.1"
    assert request.headers["x-team"] == "ops"
    assert body == {
        "type": "backchannel.notification",
        "version": 1,
        "id": "n-7",
        "idempotency_key": "idem-7",
        "severity": "critical",
        "subject": "Database down",
        "body": "db1 is not answering",
        "source": "grafana",
        "recipients": ["+15550100"],
        "labels": {"host": "db1"},
        "created_at": "2024-05-01T12:30:00Z",
        "attempt": 2,
        "provider_state": "outage",
        "drill": False,
    }


async def test_timestamp_comes_from_the_injected_clock(receiver: WebhookReceiver, make: Factory) -> None:
    """webhook-timestamp is the clock's unix seconds."""
    await make("hook", receiver.url, SECRET, clock=lambda: NOW + 0.9).send(_message())
    [request] = await receiver.wait_for_async(1)
    assert request.headers["webhook-timestamp"] == str(int(NOW))


async def test_injected_client_is_not_closed(receiver: WebhookReceiver) -> None:
    """aclose() leaves a client it did not create open."""
    async with httpx.AsyncClient() as client:
        channel = WebhookChannel("hook", receiver.url, SECRET, client=client)
        await channel.aclose()
        assert not client.is_closed


@pytest.mark.parametrize("status", [500, 502, 503, 408, 425])
async def test_server_errors_and_retryable_4xx_are_transient(
    receiver: WebhookReceiver, status: int, make: Factory
) -> None:
    """5xx, 408 and 425 can succeed later."""
    receiver.respond(ScriptedResponse(status=status))
    error = await _failure(make("hook", receiver.url, SECRET))
    assert not error.permanent
    assert str(status) in str(error)


async def test_500_blames_the_service(receiver: WebhookReceiver, make: Factory) -> None:
    """A 5xx says the receiver itself is unwell."""
    receiver.respond(ScriptedResponse(status=500))
    assert (await _failure(make("hook", receiver.url, SECRET))).service_fault


async def test_410_is_permanent(receiver: WebhookReceiver, make: Factory) -> None:
    """410 Gone: the endpoint will not come back."""
    receiver.respond(ScriptedResponse(status=410))
    assert (await _failure(make("hook", receiver.url, SECRET))).permanent


async def test_400_is_permanent_and_not_a_service_fault(receiver: WebhookReceiver, make: Factory) -> None:
    """A rejected body will be rejected again; the service is fine."""
    receiver.respond(ScriptedResponse(status=400))
    error = await _failure(make("hook", receiver.url, SECRET))
    assert error.permanent
    assert not error.service_fault


async def test_429_retry_after_seconds(receiver: WebhookReceiver, make: Factory) -> None:
    """429 with Retry-After in seconds is transient with that delay."""
    receiver.respond(ScriptedResponse(status=429, headers={"Retry-After": "120"}))
    error = await _failure(make("hook", receiver.url, SECRET))
    assert not error.permanent
    assert error.retry_after_s == 120.0


async def test_503_retry_after_http_date(receiver: WebhookReceiver, make: Factory) -> None:
    """Retry-After as an HTTP-date becomes seconds from the injected clock."""
    when = datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=90)
    receiver.respond(
        ScriptedResponse(status=503, headers={"Retry-After": format_datetime(when, usegmt=True)})
    )
    error = await _failure(make("hook", receiver.url, SECRET, clock=lambda: NOW))
    assert error.retry_after_s == pytest.approx(90.0)


async def test_unparseable_retry_after_is_ignored(receiver: WebhookReceiver, make: Factory) -> None:
    """A Retry-After that is neither seconds nor a date leaves the dispatcher's backoff in charge."""
    receiver.respond(ScriptedResponse(status=429, headers={"Retry-After": "soon"}))
    assert (await _failure(make("hook", receiver.url, SECRET))).retry_after_s is None


async def test_slow_response_past_timeout_is_transient(receiver: WebhookReceiver, make: Factory) -> None:
    """A receiver slower than timeout_s is a transient service fault."""
    receiver.respond(ScriptedResponse(delay_s=30.0))
    error = await _failure(make("hook", receiver.url, SECRET, timeout_s=0.3))
    assert not error.permanent
    assert error.service_fault
    assert "timed out" in str(error)


async def test_connection_reset_is_transient(receiver: WebhookReceiver, make: Factory) -> None:
    """A reset connection is transient."""
    receiver.respond(ScriptedResponse(reset=True))
    error = await _failure(make("hook", receiver.url, SECRET))
    assert not error.permanent
    assert error.service_fault


async def test_connection_refused_is_transient(receiver: WebhookReceiver, make: Factory) -> None:
    """Nothing listening is transient."""
    url = receiver.url
    receiver.stop()
    error = await _failure(make("hook", url, SECRET))
    assert not error.permanent
    assert error.service_fault


async def test_redirect_is_not_followed_and_permanent(receiver: WebhookReceiver, make: Factory) -> None:
    """A 3xx is a configuration problem: permanent, and the Location is never requested."""
    receiver.script(ScriptedResponse(status=307, headers={"Location": "/elsewhere"}))
    error = await _failure(make("hook", receiver.url, SECRET))
    assert error.permanent
    assert [r.path for r in await receiver.wait_for_async(1)] == ["/hook"]
    assert len(receiver.requests) == 1


async def test_script_then_recovery_delivers(receiver: WebhookReceiver, make: Factory) -> None:
    """After scripted failures run out the receiver answers 200 and the send succeeds."""
    receiver.script(ScriptedResponse(status=503))
    channel = make("hook", receiver.url, SECRET)
    await _failure(channel)
    assert (await channel.send(_message())).detail == "HTTP 200 OK"


@pytest.mark.parametrize(
    "response", [ScriptedResponse(status=500), ScriptedResponse(reset=True), ScriptedResponse(status=401)]
)
async def test_secret_never_appears_in_errors(
    receiver: WebhookReceiver, response: ScriptedResponse, make: Factory
) -> None:
    """Neither the secret nor its key bytes show up in the error or its traceback."""
    receiver.respond(response)
    error = await _failure(make("hook", receiver.url, SECRET))
    text = "".join(traceback.format_exception(error)) + repr(error)
    assert SECRET not in text
    assert SECRET.removeprefix("whsec_") not in text


def test_bad_secret_is_a_config_error_without_the_secret() -> None:
    """An undecodable secret fails at construction and is not quoted."""
    with pytest.raises(ChannelConfigError) as info:
        WebhookChannel("hook", "https://example.test/hook", "whsec_%%%not-base64%%%")
    assert "not-base64" not in str(info.value)


@pytest.mark.parametrize("url", ["ftp://example.test/hook", "not a url", "https://"])
def test_unusable_url_is_a_config_error(url: str) -> None:
    """Only http(s) URLs with a host are accepted."""
    with pytest.raises(ChannelConfigError):
        WebhookChannel("hook", url, SECRET)
