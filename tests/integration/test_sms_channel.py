"""The SMS channel against a Twilio stand-in on 127.0.0.1: payloads, error codes, pacing, callbacks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from channels.base import ChannelConfigError, ChannelError, OutboundMessage
from channels.gsm import segment_count
from channels.sms import SmsChannel, render_text, validate_e164
from channels.twilio_callbacks import (
    CallbackError,
    DeliveryOutcome,
    ForgedCallback,
    MalformedCallback,
    StatusCallback,
    verify_status_callback,
)
from tests.servers import ScriptedResponse, WebhookReceiver
from tests.stand_ins.twilio import Reply, TwilioStandIn, read_form, serve, serve_app

ACCOUNT_SID = "AC" + "a1" * 16
TOKEN = "s3cr3t-auth-token-0123456789abcdef"
SENDER = "+14155550100"
ALICE = "+14155552671"
BOB = "+12015550123"
SERVICE_SID = "MG" + "b2" * 16


def message(**overrides: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "notification_id": "n-42",
        "idempotency_key": "k-42",
        "severity": "critical",
        "subject": "Mail provider down",
        "body": "SMTP probes failing since 10:02",
        "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    return OutboundMessage(**{**fields, **overrides})


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioStandIn]:
    async with serve(TwilioStandIn(ACCOUNT_SID, TOKEN)) as stand_in:
        yield stand_in


def make_channel(base_url: str, **overrides: Any) -> SmsChannel:
    settings: dict[str, Any] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": TOKEN,
        "from_number": SENDER,
        "recipients": (ALICE,),
        "segments_per_s": 1000.0,
        "timeout_s": 5.0,
        "base_url": base_url,
    }
    return SmsChannel("sms", **{**settings, **overrides})


@pytest.fixture
async def channel(twilio: TwilioStandIn) -> AsyncIterator[SmsChannel]:
    sms = make_channel(twilio.base_url)
    yield sms
    await sms.aclose()


async def test_message_carries_sender_text_and_validity_period(
    twilio: TwilioStandIn, channel: SmsChannel
) -> None:
    """One create call: To, From, the rendered text and ValidityPeriod; the receipt holds the MessageSid."""
    receipt = await channel.send(message())
    [sent] = twilio.sent
    assert (sent.to, sent.sender) == (ALICE, SENDER)
    assert sent.body == "[CRITICAL] Mail provider down - SMTP probes failing since 10:02 [n-42]"
    assert sent.params["ValidityPeriod"] == "600"
    assert "StatusCallback" not in sent.params
    assert receipt.remote_id == sent.sid
    assert receipt.channel == "sms"


async def test_messaging_service_sid_replaces_from(twilio: TwilioStandIn) -> None:
    """With a Messaging Service the request names the service and no From."""
    sms = make_channel(twilio.base_url, from_number=None, messaging_service_sid=SERVICE_SID)
    try:
        await sms.send(message())
    finally:
        await sms.aclose()
    [sent] = twilio.sent
    assert sent.params["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in sent.params


async def test_long_text_is_shortened_to_max_segments_keeping_the_id(
    twilio: TwilioStandIn, channel: SmsChannel
) -> None:
    """A 2000-character body goes out in at most 3 segments and still ends with the notification id."""
    await channel.send(message(body="disk full " * 200))
    [sent] = twilio.sent
    assert segment_count(sent.body) == 3
    assert sent.body.endswith("... [n-42]")


def test_text_uses_an_em_dash_only_when_already_ucs2() -> None:
    """The em dash would force UCS-2, so GSM-7 texts get a hyphen instead."""
    assert " - " in render_text(message(), 3)
    assert "Störung — 🔥 Mail" in render_text(message(subject="Störung", body="🔥 Mail"), 3)


async def test_message_phone_numbers_override_defaults_and_emails_are_ignored(
    twilio: TwilioStandIn, channel: SmsChannel
) -> None:
    """Numbers on the message are used; its e-mail addresses (for other channels) are not."""
    await channel.send(message(recipients=("ops@example.com", BOB)))
    assert [s.to for s in twilio.sent] == [BOB]


@pytest.mark.parametrize("code", [21211, 21610, 21614, 21408, 21606, 21617])
async def test_documented_permanent_codes_fail_the_step(
    twilio: TwilioStandIn, channel: SmsChannel, code: int
) -> None:
    """Invalid, opted-out, landline, region-blocked numbers, a bad sender, other 4xx: permanent."""
    twilio.fail_next(Reply(400, code))
    with pytest.raises(ChannelError) as caught:
        await channel.send(message())
    assert caught.value.permanent
    assert not caught.value.service_fault
    assert str(code) in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "service_fault"),
    [
        (Reply(429, 20429), False),
        (Reply(400, 30001), False),
        (Reply(500, 20500), True),
        (Reply(503, None, "Service Unavailable"), True),
    ],
)
async def test_documented_transient_answers_are_retried_later(
    twilio: TwilioStandIn, channel: SmsChannel, reply: Reply, service_fault: bool
) -> None:
    """Too many requests, queue overflow and 5xx leave the message for a later retry, not the SDK's."""
    twilio.fail_next(reply)
    with pytest.raises(ChannelError) as caught:
        await channel.send(message())
    assert twilio.requests == 1
    assert not caught.value.permanent
    assert caught.value.service_fault is service_fault


async def test_retry_after_is_passed_on(twilio: TwilioStandIn, channel: SmsChannel) -> None:
    """A 429's Retry-After becomes the error's retry_after_s."""
    twilio.fail_next(Reply(429, 20429, "Too Many Requests", retry_after="7"))
    with pytest.raises(ChannelError) as caught:
        await channel.send(message())
    assert caught.value.retry_after_s == 7.0


async def test_unreachable_api_is_transient() -> None:
    """A refused connection is a transient service fault."""
    with WebhookReceiver() as receiver:
        url = receiver.url
    sms = make_channel(url)
    try:
        with pytest.raises(ChannelError) as caught:
            await sms.send(message())
    finally:
        await sms.aclose()
    assert (caught.value.permanent, caught.value.service_fault) == (False, True)


@pytest.mark.parametrize("response", [ScriptedResponse(delay_s=5.0), ScriptedResponse(reset=True)])
async def test_timeout_and_reset_are_transient(response: ScriptedResponse) -> None:
    """A reply slower than timeout_s, or a reset connection, is a transient service fault."""
    with WebhookReceiver() as receiver:
        receiver.respond(response)
        sms = make_channel(receiver.url, timeout_s=0.5)
        try:
            with pytest.raises(ChannelError) as caught:
                await sms.send(message())
        finally:
            await sms.aclose()
    assert (caught.value.permanent, caught.value.service_fault) == (False, True)


async def test_auth_token_never_appears_in_logs_or_errors(
    twilio: TwilioStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing send with a rejected token logs and raises nothing that contains the token."""
    wrong = "wrong-token-fedcba9876543210"
    sms = make_channel(twilio.base_url, auth_token=wrong)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(ChannelError) as caught:
            await sms.send(message())
        twilio.fail_next(Reply(500, 20500))
        with pytest.raises(ChannelError) as server_error:
            await sms.send(message())
    finally:
        await sms.aclose()
    assert caught.value.permanent and caught.value.service_fault
    texts = [caplog.text, *(_chain(e) for e in (caught.value, server_error.value))]
    assert all(wrong not in text for text in texts)


def _chain(error: BaseException | None) -> str:
    parts = []
    while error is not None:
        parts += [str(error), repr(error), repr(vars(error)) if hasattr(error, "__dict__") else ""]
        error = error.__cause__
    return "\n".join(parts)


async def test_each_recipient_gets_its_own_message(twilio: TwilioStandIn) -> None:
    """Two recipients, two create calls; the receipt lists both MessageSids."""
    sms = make_channel(twilio.base_url, recipients=(ALICE, BOB))
    try:
        receipt = await sms.send(message())
    finally:
        await sms.aclose()
    assert [s.to for s in twilio.sent] == [ALICE, BOB]
    assert receipt.remote_id == ",".join(s.sid for s in twilio.sent)


async def test_partial_failure_is_delivered_with_detail(twilio: TwilioStandIn) -> None:
    """One recipient opted out, one reached: delivered, and the detail names the failure."""
    twilio.fail_number(ALICE, Reply(400, 21610, "Attempt to send to unsubscribed recipient"))
    sms = make_channel(twilio.base_url, recipients=(ALICE, BOB))
    try:
        receipt = await sms.send(message())
    finally:
        await sms.aclose()
    assert receipt.remote_id == twilio.sent[0].sid
    assert "sent to 1 of 2" in receipt.detail
    assert ALICE in receipt.detail and "21610" in receipt.detail


async def test_a_recipient_failing_for_now_is_retried_without_texting_the_others_again(
    twilio: TwilioStandIn,
) -> None:
    """One recipient's 429 while the other was texted: retried later, and the retry texts only that one."""
    twilio.fail_next(Reply(429, 20429, "Too Many Requests", retry_after="3"))
    sms = make_channel(twilio.base_url, recipients=(ALICE, BOB))
    try:
        with pytest.raises(ChannelError) as caught:
            await sms.send(message())
        [bob] = twilio.sent
        receipt = await sms.send(message(attempt=2))
    finally:
        await sms.aclose()
    assert (caught.value.permanent, caught.value.retry_after_s) == (False, 3.0)
    assert caught.value.remote_id == bob.sid and ALICE in str(caught.value)
    assert [s.to for s in twilio.sent] == [BOB, ALICE]
    assert receipt.remote_id == ",".join(s.sid for s in reversed(twilio.sent))


@pytest.mark.parametrize(("bob_reply", "permanent"), [(Reply(400, 21211), True), (Reply(503), False)])
async def test_all_recipients_failing_is_permanent_only_if_every_failure_is(
    twilio: TwilioStandIn, bob_reply: Reply, permanent: bool
) -> None:
    """Nobody reached: permanent when every failure is, otherwise retried later."""
    twilio.fail_number(ALICE, Reply(400, 21614))
    twilio.fail_number(BOB, bob_reply)
    sms = make_channel(twilio.base_url, recipients=(ALICE, BOB))
    try:
        with pytest.raises(ChannelError) as caught:
            await sms.send(message())
    finally:
        await sms.aclose()
    assert caught.value.permanent is permanent
    assert ALICE in str(caught.value) and BOB in str(caught.value)


async def test_burst_is_paced_below_the_sender_limit_and_keeps_order() -> None:
    """50 messages at 10 segments/s against a 10/s limit: no 429, all arrive, in order."""
    stand_in = TwilioStandIn(ACCOUNT_SID, TOKEN, rate_per_s=10.0, burst=2.0)
    async with serve(stand_in) as twilio:
        sms = make_channel(twilio.base_url, segments_per_s=10.0)
        try:
            async with asyncio.timeout(60.0):
                await asyncio.gather(*(sms.send(message(notification_id=f"n-{i}")) for i in range(50)))
        finally:
            await sms.aclose()
    assert twilio.rate_limited == 0
    assert [s.body.rsplit(" ", 1)[-1] for s in twilio.sent] == [f"[n-{i}]" for i in range(50)]


async def test_invalid_message_number_is_permanent(channel: SmsChannel) -> None:
    """A malformed number on the message cannot be fixed by retrying."""
    with pytest.raises(ChannelError) as caught:
        await channel.send(message(recipients=("+1415555",)))
    assert caught.value.permanent


async def test_an_invalid_number_on_the_message_fails_alone(
    twilio: TwilioStandIn, channel: SmsChannel
) -> None:
    """A number the adapter refuses (a directory phone mistyped) fails for itself; the others are texted."""
    receipt = await channel.send(message(recipients=("+15555550123", BOB)))
    assert [s.to for s in twilio.sent] == [BOB]
    assert "sent to 1 of 2" in receipt.detail and "+15555550123" in receipt.detail


def test_validate_e164_normalises_and_rejects() -> None:
    """Valid numbers come back in E.164; national formats and impossible numbers are refused."""
    assert validate_e164("+1 (415) 555-2671") == ALICE
    for bad in ("4155552671", "+1415555267", "+99912345", "call me"):
        with pytest.raises(ValueError, match=r"phone number|E\.164"):
            validate_e164(bad)


@pytest.mark.parametrize(
    "overrides",
    [
        {"from_number": SENDER, "messaging_service_sid": SERVICE_SID},
        {"from_number": None},
        {"messaging_service_sid": "MG123", "from_number": None},
        {"account_sid": "AC123"},
        {"recipients": ("555-1234",)},
        {"max_segments": 11},
        {"validity_period_s": 36001},
        {"segments_per_s": 0},
        {"timeout_s": 0},
    ],
)
def test_bad_settings_are_config_errors(overrides: dict[str, Any]) -> None:
    """Settings Twilio would refuse are caught when the channel is built."""
    with pytest.raises(ChannelConfigError):
        make_channel("http://127.0.0.1:9", **overrides)


# --- status callbacks -----------------------------------------------------------------------


class CallbackReceiver:
    """The API side of status callbacks: verify against the configured URL, record or refuse."""

    def __init__(self) -> None:
        self.url = ""
        self.accepted: list[StatusCallback] = []

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/callbacks/twilio", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        fields = await read_form(request)
        try:
            callback = verify_status_callback(
                TOKEN, self.url, fields, request.headers.get("X-Twilio-Signature")
            )
        except ForgedCallback:
            return Response(status_code=403)
        except CallbackError:
            return Response(status_code=400)
        self.accepted.append(callback)
        return Response(status_code=204)


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    callbacks = CallbackReceiver()
    async with serve_app(callbacks.app()) as port:
        callbacks.url = f"http://127.0.0.1:{port}/v1/callbacks/twilio"
        yield callbacks


async def test_signed_status_callbacks_are_accepted_and_forged_rejected(
    twilio: TwilioStandIn, receiver: CallbackReceiver
) -> None:
    """A callback signed with the auth token is parsed; one signed with another token gets 403."""
    sms = make_channel(twilio.base_url, status_callback=receiver.url)
    try:
        receipt = await sms.send(message())
    finally:
        await sms.aclose()
    [sent] = twilio.sent
    assert sent.params["StatusCallback"] == receiver.url
    assert await twilio.post_status(sent, "delivered") == 204
    assert await twilio.post_status(sent, "undelivered", auth_token="forged", ErrorCode="30003") == 403
    assert await twilio.post_status(sent, "undelivered", ErrorCode="30003") == 204
    assert [(c.message_sid, c.outcome, c.error_code) for c in receiver.accepted] == [
        (receipt.remote_id, DeliveryOutcome.DELIVERED, None),
        (receipt.remote_id, DeliveryOutcome.FAILED, 30003),
    ]


def _signed(form: dict[str, str], url: str = "https://hooks.example/v1/callbacks/twilio") -> str:
    return str(RequestValidator(TOKEN).compute_signature(url, form))


def test_tampered_or_unsigned_callback_is_forged() -> None:
    """A field changed after signing, or no signature at all, is refused."""
    url = "https://hooks.example/v1/callbacks/twilio"
    form = {"MessageSid": "SM1", "MessageStatus": "failed"}
    signature = _signed(form)
    with pytest.raises(ForgedCallback):
        verify_status_callback(TOKEN, url, {**form, "MessageStatus": "delivered"}, signature)
    with pytest.raises(ForgedCallback):
        verify_status_callback(TOKEN, url, form, None)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("delivered", DeliveryOutcome.DELIVERED),
        ("undelivered", DeliveryOutcome.FAILED),
        ("failed", DeliveryOutcome.FAILED),
        ("sent", DeliveryOutcome.PENDING),
        ("queued", DeliveryOutcome.PENDING),
    ],
)
def test_statuses_map_to_outcomes(status: str, outcome: DeliveryOutcome) -> None:
    """Delivered settles, undelivered/failed fail the step, sent/queued wait for the next callback."""
    url = "https://hooks.example/v1/callbacks/twilio"
    form = {"MessageSid": "SM1", "MessageStatus": status}
    assert verify_status_callback(TOKEN, url, form, _signed(form)).outcome is outcome


@pytest.mark.parametrize(
    "form", [{"MessageStatus": "delivered"}, {"MessageSid": "SM1", "MessageStatus": "lost"}]
)
def test_signed_but_malformed_callback_is_rejected(form: dict[str, str]) -> None:
    """A verified callback without a MessageSid or with an unknown status is malformed."""
    url = "https://hooks.example/v1/callbacks/twilio"
    with pytest.raises(MalformedCallback):
        verify_status_callback(TOKEN, url, form, _signed(form))
