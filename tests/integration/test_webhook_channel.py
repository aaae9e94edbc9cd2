"""WebhookChannel against a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import base64
import http.server
import itertools
import logging
import re
import ssl
import threading
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import trustme
from standardwebhooks.webhooks import Webhook

from channels.base import ChannelConfigError, ChannelError, OutboundMessage, Receipt
from channels.http1 import Endpoint, InvalidRequest
from channels.http1_pool import Http1Pool
from channels.webhook import WebhookChannel
from channels.webhook_templates import compile_template, load_preset
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
    """Build channels that are closed after the test; loopback allowed (the receiver lives there)."""
    made: list[WebhookChannel] = []

    def factory(*args: object, **kwargs: object) -> WebhookChannel:
        kwargs.setdefault("allow_private", True)
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


async def test_delivers_signed_json_verified_by_reference_library(
    receiver: WebhookReceiver, make: Factory
) -> None:
    """The POST verifies with standardwebhooks and carries the documented body and headers."""
    receipt = await make("hook", receiver.url, SECRET, headers={"X-Team": "ops"}).send(_message())
    [request] = await receiver.wait_for_async(1)
    body = Webhook(SECRET).verify(request.body, dict(request.headers))
    assert receipt.detail == "HTTP 200 OK"
    assert request.method == "POST"
    assert request.headers["webhook-id"] == request.headers["idempotency-key"] == "n-7"
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


async def test_injected_transport_is_not_closed(receiver: WebhookReceiver) -> None:
    """aclose() leaves a transport it did not create usable."""
    async with httpx.AsyncHTTPTransport() as transport:
        channel = WebhookChannel("hook", receiver.url, SECRET, transport=transport, allow_private=True)
        await channel.aclose()
        assert (await _send_via(transport, receiver)).detail == "HTTP 200 OK"


async def _send_via(transport: httpx.AsyncBaseTransport, receiver: WebhookReceiver) -> Receipt:
    channel = WebhookChannel("hook", receiver.url, SECRET, transport=transport, allow_private=True)
    return await channel.send(_message())


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


@pytest.mark.parametrize("value", ["soon", "²", "١٢"])
async def test_unparseable_retry_after_is_ignored(
    receiver: WebhookReceiver, make: Factory, value: str
) -> None:
    """A Retry-After that is neither seconds nor a date (non-ASCII digits included, which
    str.isdigit takes and float() did not) leaves the dispatcher's backoff in charge."""
    receiver.respond(ScriptedResponse(status=429, headers={"Retry-After": value}))
    error = await _failure(make("hook", receiver.url, SECRET))
    assert (error.retry_after_s, "internal error" in str(error)) == (None, False)


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
    for secret in ("whsec_%%%not-base64%%%", [SECRET, "whsec_%%%not-base64%%%"]):
        with pytest.raises(ChannelConfigError) as info:
            WebhookChannel("hook", "https://example.test/hook", secret)
        assert "not-base64" not in str(info.value)


@pytest.mark.parametrize("url", ["ftp://example.test/hook", "not a url", "https://"])
def test_unusable_url_is_a_config_error(url: str) -> None:
    """Only http(s) URLs with a host are accepted."""
    with pytest.raises(ChannelConfigError):
        WebhookChannel("hook", url, SECRET)


# --- signing with secret rotation, headers ------------------------------------------------------

OLD_SECRET = "whsec_" + base64.b64encode(b"the-old-secret-being-rotated-out").decode()


async def test_rotation_signs_with_every_secret(receiver: WebhookReceiver, make: Factory) -> None:
    """With two secrets the request verifies with standardwebhooks under either one."""
    await make("hook", receiver.url, [SECRET, OLD_SECRET]).send(_message())
    [request] = await receiver.wait_for_async(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OLD_SECRET):
        assert Webhook(secret).verify(request.body, dict(request.headers))["id"] == "n-7"


async def test_without_a_secret_nothing_is_signed(receiver: WebhookReceiver, make: Factory) -> None:
    """No secret (a preset for a vendor that does not verify) sends the id but no signature."""
    await make("hook", receiver.url).send(_message())
    [request] = await receiver.wait_for_async(1)
    assert request.headers["webhook-id"] == "n-7"
    assert "webhook-signature" not in request.headers
    assert "webhook-timestamp" not in request.headers


async def test_custom_headers_cannot_replace_ours(receiver: WebhookReceiver, make: Factory) -> None:
    """A configured header named like one of ours (any case) is replaced, never sent twice."""
    headers = {"content-type": "text/plain", "WEBHOOK-ID": "forged", "Authorization": "Bearer x"}
    await make("hook", receiver.url, SECRET, headers=headers).send(_message())
    [request] = await receiver.wait_for_async(1)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer x"
    Webhook(SECRET).verify(request.body, dict(request.headers))


# --- templates and presets over the wire ----------------------------------------------------------


async def test_template_body_is_sent_and_signed(receiver: WebhookReceiver, make: Factory) -> None:
    """A template's rendering is the body, and the signature covers exactly those bytes."""
    template = compile_template('{"text": {{ ("*" ~ severity ~ "* " ~ subject) | tojson }}}')
    await make("hook", receiver.url, SECRET, template=template).send(_message())
    [request] = await receiver.wait_for_async(1)
    assert Webhook(SECRET).verify(request.body, dict(request.headers)) == {"text": "*critical* Database down"}


async def test_template_rendering_invalid_json_is_permanent_and_sends_nothing(
    receiver: WebhookReceiver, make: Factory
) -> None:
    """A body that is not JSON fails the send permanently with the reason; nothing is POSTed."""
    channel = make("hook", receiver.url, SECRET, template=compile_template("{{ subject }}"))
    error = await _failure(channel)
    assert error.permanent
    assert "not valid JSON" in str(error)
    assert receiver.requests == []


async def test_non_json_content_type_is_sent_as_rendered(receiver: WebhookReceiver, make: Factory) -> None:
    """With content_type text/plain the rendering is not parsed and goes out as is."""
    template = compile_template("[{{ severity | upper }}] {{ subject }}")
    await make("hook", receiver.url, template=template, content_type="text/plain; charset=utf-8").send(
        _message()
    )
    [request] = await receiver.wait_for_async(1)
    assert request.body == b"[CRITICAL] Database down"
    assert request.headers["content-type"] == "text/plain; charset=utf-8"


def _pagerduty(make: Factory, receiver: WebhookReceiver) -> WebhookChannel:
    return make("pd", receiver.url, template=load_preset("pagerduty"), options={"routing_key": ROUTING_KEY})


ROUTING_KEY = "R0ut1ngKeyR0ut1ngKeyR0ut1ngKey12"


async def test_pagerduty_202_is_delivered(receiver: WebhookReceiver, make: Factory) -> None:
    """PagerDuty answers 202 Accepted to an enqueued event: delivered."""
    receiver.respond(ScriptedResponse(status=202, body=b'{"status":"success","dedup_key":"n-7"}'))
    receipt = await _pagerduty(make, receiver).send(_message())
    [request] = await receiver.wait_for_async(1)
    assert receipt.detail == "HTTP 202 Accepted"
    event = request.json()
    assert event["routing_key"] == ROUTING_KEY
    assert event["dedup_key"] == "idem-7"
    assert event["event_action"] == "trigger"


@pytest.mark.parametrize(
    ("status", "permanent"), [(400, True), (429, False), (500, False), (502, False), (503, False)]
)
async def test_pagerduty_errors_map_to_its_retry_rules(
    receiver: WebhookReceiver, make: Factory, status: int, permanent: bool
) -> None:
    """PagerDuty's documented rules: 400 do not retry; 429 and 5xx retry later."""
    receiver.respond(ScriptedResponse(status=status, headers={"Retry-After": "60"}))
    error = await _failure(_pagerduty(make, receiver))
    assert error.permanent is permanent
    assert error.retry_after_s == (None if permanent else 60.0)


async def test_teams_preset_posts_an_adaptive_card(receiver: WebhookReceiver, make: Factory) -> None:
    """The Teams preset POSTs a message whose one attachment is an Adaptive Card."""
    await make("teams", receiver.url, template=load_preset("teams")).send(_message())
    [request] = await receiver.wait_for_async(1)
    [attachment] = request.json()["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"]["type"] == "AdaptiveCard"


async def test_teams_preset_keeps_a_long_body_under_the_teams_message_limit(
    receiver: WebhookReceiver, make: Factory
) -> None:
    """A 40,000-character body is cut so the card stays under Teams' 28 KB: a Workflow answers 202
    and only then fails to post a bigger one (MessageSizeExceeded), so the alert was lost unseen."""
    body = "Traceback (most recent call last): déjà vu " + "x" * 40_000
    await make("teams", receiver.url, template=load_preset("teams")).send(_message(body=body))
    [request] = await receiver.wait_for_async(1)
    assert len(request.body) < 20_000
    texts = [block["text"] for block in request.json()["attachments"][0]["content"]["body"][:3]]
    assert texts[2].startswith("Traceback (most recent call last): déjà vu x") and texts[2].endswith("…")


async def test_teams_preset_keeps_the_largest_notification_under_the_teams_message_limit(
    receiver: WebhookReceiver, make: Factory
) -> None:
    """The most the API accepts (a 998-character subject, 64 labels of 256 and 256 characters, the
    body 64 KiB), in three-byte characters, still makes a card under 28 KB: 16 labels shown, cut,
    and a fact saying how many more."""
    labels = {f"{n:02d}" + "€" * 254: "€" * 256 for n in range(64)}
    message = _message(subject="€" * 998, body="€" * 65_536, labels=labels)
    await make("teams", receiver.url, template=load_preset("teams")).send(message)
    [request] = await receiver.wait_for_async(1)
    assert len(request.body) < 28 * 1024, len(request.body)
    facts = request.json()["attachments"][0]["content"]["body"][3]["facts"]
    assert len(facts) == 5 + 16 + 1 and facts[-1] == {"title": "…", "value": "48 more labels"}
    assert facts[5]["title"].startswith("00€") and len(facts[5]["title"]) == 64


# --- secrets stay out of logs and errors -----------------------------------------------------------


@pytest.mark.parametrize(
    "response", [ScriptedResponse(status=500), ScriptedResponse(reset=True), ScriptedResponse(status=400)]
)
async def test_no_secret_reaches_the_logs(
    receiver: WebhookReceiver, make: Factory, response: ScriptedResponse, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, a failing send logs neither the signing secrets, the routing key nor the URL's sig."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("channels.webhook").debug("capture check")  # the channel itself logs nothing
    receiver.respond(response)
    url = receiver.url + "?api-version=2016-06-01&sig=UrlSignatureCanary123"
    channel = make(
        "pd",
        url,
        [SECRET, OLD_SECRET],
        template=load_preset("pagerduty"),
        options={"routing_key": ROUTING_KEY},
    )
    error = await _failure(channel)
    await receiver.wait_for_async(1)
    text = caplog.text + "".join(traceback.format_exception(error))
    assert "capture check" in caplog.text, "the capture is live at DEBUG"
    for secret in (SECRET, OLD_SECRET.removeprefix("whsec_"), ROUTING_KEY, "UrlSignatureCanary123"):
        assert secret not in text


async def test_template_error_does_not_quote_option_values(make: Factory) -> None:
    """A template failing on an option value names the line but not the (secret) value."""
    template = compile_template('{"n": {{ options.routing_key | int(base=10, default=none) + 1 }}}')
    channel = make(
        "pd", "https://hooks.example.com/x", template=template, options={"routing_key": ROUTING_KEY}
    )
    error = await _failure(channel)
    assert error.permanent
    assert ROUTING_KEY not in str(error)


# --- TLS: verification on, CA bundle, SNI of the configured host on a pinned connection ----------


class TlsReceiver:
    """An HTTPS server on 127.0.0.1 with a certificate for ``hooks.test``; records SNI and requests."""

    def __init__(self, cert: trustme.LeafCert) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self.server_names: list[str | None] = []
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        context.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        return Handler

    def __enter__(self) -> TlsReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_receiver(ca: trustme.CA) -> Iterator[TlsReceiver]:
    with TlsReceiver(ca.issue_cert("hooks.test")) as server:
        yield server


async def _to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"] if host == "hooks.test" else []


async def test_tls_with_ca_bundle_verifies_the_configured_host(
    tls_receiver: TlsReceiver, make: Factory, ca: trustme.CA, tmp_path: Path
) -> None:
    """verify: <CA file> trusts that CA; the pinned connection offers SNI and Host for hooks.test."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    url = f"https://hooks.test:{tls_receiver.port}/in"
    receipt = await make("hook", url, SECRET, verify=str(bundle), resolver=_to_loopback).send(_message())
    assert receipt.detail == "HTTP 204 No Content"
    [(path, headers, body)] = tls_receiver.requests
    assert (path, headers["host"]) == ("/in", f"hooks.test:{tls_receiver.port}")
    assert tls_receiver.server_names == ["hooks.test"]
    Webhook(SECRET).verify(body, headers)


async def test_tls_verification_is_on_by_default(tls_receiver: TlsReceiver, make: Factory) -> None:
    """A certificate from a CA the system does not trust fails the send (transient), unsent."""
    url = f"https://hooks.test:{tls_receiver.port}/in"
    error = await _failure(make("hook", url, SECRET, resolver=_to_loopback))
    assert not error.permanent
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    assert tls_receiver.requests == []


def test_unreadable_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    """A verify path that is not a readable CA bundle fails at construction."""
    with pytest.raises(ChannelConfigError, match="CA bundle"):
        WebhookChannel("hook", "https://hooks.example.com/x", SECRET, verify=str(tmp_path / "missing.pem"))


# --- the HTTP/1.1 connection: keep-alive, and when a connection must not be reused ----------------

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
#: what a connection's n-th request (from 0) is answered with; None closes without an answer
Answer = Callable[[int, int], Awaitable[bytes | None]]


class RawServer:
    """A loopback HTTP/1.1 server whose answers a test writes byte for byte; counts connections."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self.connections = 0
        self.requests = 0
        self.url = ""
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection, self.connections = self.connections, self.connections + 1
        self.writers.append(writer)
        self.handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            for nth in itertools.count():
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await reader.readexactly(int(length[1]) if length else 0)
                self.requests += 1
                if (answer := await self._answer(connection, nth)) is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        writer.close()


@asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[RawServer]:
    state = RawServer(answer)
    server = await asyncio.start_server(state._handle, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    async with server:
        yield state
        # Closing the connections ends the handlers normally (3.11 logs a cancelled one as an error).
        for writer in state.writers:
            writer.close()
        await asyncio.gather(*state.handlers)


async def _always_ok(connection: int, nth: int) -> bytes:
    return OK


async def test_sends_share_one_kept_alive_connection(make: Factory) -> None:
    """Consecutive sends go over one connection, not one connection each."""
    async with raw_server(_always_ok) as server:
        channel = make("hook", server.url, SECRET)
        for _ in range(3):
            assert (await channel.send(_message())).detail == "HTTP 200 OK"
        assert (server.connections, server.requests) == (1, 3)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200_000,
        OK + b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["connection-close", "large-body", "stray-bytes-after-the-answer"],
)
async def test_connection_is_not_reused_when_it_cannot_be(answer: bytes, make: Factory) -> None:
    """An answer saying close, too large to read, or followed by stray bytes: the next send reconnects."""

    async def first_then_ok(connection: int, nth: int) -> bytes:
        return answer if connection == 0 else OK

    async with raw_server(first_then_ok) as server:
        channel = make("hook", server.url, SECRET)
        for _ in range(2):
            assert (await channel.send(_message())).detail == "HTTP 200 OK"
        assert server.connections == 2


async def test_kept_alive_connection_closed_by_the_server_is_retried_once(make: Factory) -> None:
    """A reused connection closed without an answer (the server's idle timeout) costs no failure."""

    async def one_per_connection(connection: int, nth: int) -> bytes | None:
        return OK if nth == 0 else None

    async with raw_server(one_per_connection) as server:
        channel = make("hook", server.url, SECRET)
        for _ in range(2):
            assert (await channel.send(_message())).detail == "HTTP 200 OK"
        assert (server.connections, server.requests) == (2, 3)


async def test_new_connection_closed_without_an_answer_is_transient(make: Factory) -> None:
    """On a fresh connection, no answer is a transient service fault, not retried in the channel."""

    async def never(connection: int, nth: int) -> None:
        return None

    async with raw_server(never) as server:
        error = await _failure(make("hook", server.url, SECRET))
        assert not error.permanent
        assert error.service_fault
        assert server.requests == 1


async def test_timed_out_connection_is_never_reused(make: Factory) -> None:
    """After a timeout the late answer cannot be taken for the next send's: that one reconnects."""
    late = asyncio.Event()

    async def first_late(connection: int, nth: int) -> bytes:
        if connection == 0:
            await late.wait()
            return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        return OK

    async with raw_server(first_late) as server:
        channel = make("hook", server.url, SECRET, timeout_s=0.2)
        assert "timed out" in str(await _failure(channel))
        late.set()
        assert (await channel.send(_message())).detail == "HTTP 200 OK"
        assert server.connections == 2


def test_configured_header_http_cannot_carry_is_a_config_error() -> None:
    """A header value with a line break fails at construction, naming the header, never its value."""
    with pytest.raises(ChannelConfigError, match="X-Api-Key") as info:
        WebhookChannel("hook", "https://hooks.example.com/x", headers={"X-Api-Key": "s3cr3t\r\nX: y"})
    assert "s3cr3t" not in str(info.value)


async def test_an_id_http_cannot_carry_is_permanent(make: Factory) -> None:
    """An id that cannot be a header value can never be sent: permanent, and nothing goes out."""
    async with raw_server(_always_ok) as server:
        with pytest.raises(ChannelError) as info:
            await make("hook", server.url, SECRET).send(_message(notification_id="n-7\r\nX-Injected: 1"))
        assert info.value.permanent
        assert server.requests == 0


async def test_any_idempotency_key_goes_in_the_body_and_the_id_in_the_headers(
    receiver: WebhookReceiver, make: Factory
) -> None:
    """The key an API caller chose may be any text: only the body (JSON) carries it."""
    await make("hook", receiver.url, SECRET).send(_message(idempotency_key="idem\r\nX-Injected: 1"))
    [request] = await receiver.wait_for_async(1)
    assert request.json()["idempotency_key"] == "idem\r\nX-Injected: 1"
    assert request.headers["webhook-id"] == request.headers["idempotency-key"] == "n-7"
    assert "x-injected" not in request.headers


@pytest.mark.parametrize(
    ("answer", "connections"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 1),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", 1),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 2),
    ],
    ids=["chunked", "informational-first", "bare-line-feeds", "http-1.0"],
)
async def test_answer_framing(answer: bytes, connections: int, make: Factory) -> None:
    """Chunked, after a 1xx, bare LFs: read whole, the connection kept; an HTTP/1.0 answer is not."""

    async def first_then_ok(connection: int, nth: int) -> bytes:
        return answer if (connection, nth) == (0, 0) else OK

    async with raw_server(first_then_ok) as server:
        channel = make("hook", server.url, SECRET)
        for _ in range(2):
            assert (await channel.send(_message())).detail == "HTTP 200 OK"
        assert (server.connections, server.requests) == (connections, 2)


async def test_body_that_ends_with_the_connection_is_read(make: Factory) -> None:
    """No Content-Length and not chunked: the body runs to the close, and the answer counts."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(re.search(rb"(?i)content-length:\s*(\d+)", head)[1]))  # type: ignore[index]
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Type: text/plain\r\n\r\nqueued, thanks")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
        channel = make("hook", url, SECRET)
        for _ in range(2):  # the second on a new connection
            assert (await channel.send(_message())).detail == "HTTP 202 Accepted"


async def test_answer_that_is_not_http_is_transient(make: Factory) -> None:
    """Garbage for an answer: a transient service fault, and the connection is not reused."""

    async def garbage_then_ok(connection: int, nth: int) -> bytes:
        return b"SMTP 220 ready\r\n\r\n" if connection == 0 else OK

    async with raw_server(garbage_then_ok) as server:
        channel = make("hook", server.url, SECRET)
        error = await _failure(channel)
        assert (error.service_fault, error.permanent) == (True, False)
        assert (await channel.send(_message())).detail == "HTTP 200 OK"
        assert server.connections == 2


async def test_request_framing_is_checked_before_anything_is_sent() -> None:
    """The pool refuses a Content-Length that does not match the body: nothing goes out."""
    async with raw_server(_always_ok) as server:
        pool = Http1Pool()
        endpoint = Endpoint("127.0.0.1", int(server.url.split(":")[2].split("/")[0]))
        headers = [(b"Host", b"127.0.0.1"), (b"Content-Length", b"5")]
        try:
            with pytest.raises(InvalidRequest, match="Content-Length"):
                await pool.post(endpoint, b"/hook", headers, b"four")
            assert (await pool.post(endpoint, b"/hook", headers, b"fives")).status == 200
        finally:
            await pool.aclose()
        assert server.requests == 1
