"""Who may acknowledge: an SMS reply only from a number the daemon texts, the API only with ``admin``.

The HTTP API on a real socket over a real SQLite outbox, a dispatcher with fake channels (step 0
of the escalation hands the ack code to the Slack fake), Twilio-signed inbound requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from channels.fake import FakeChannel
from channels.twilio_callbacks import TWIML_SILENCE
from daemon.api.ack import SlackApp, inbound_url, with_repliers
from daemon.api.app import ApiContext
from daemon.api.auth import Grant
from daemon.api.callbacks import TwilioAccount
from daemon.build import twilio_accounts
from daemon.config import parse_config
from daemon.core.backoff import RetryPolicy
from daemon.core.model import Escalation, EscalationStep, ProviderState, Severity
from daemon.core.routing import Matcher, Route
from daemon.dispatch_policy import ChannelPolicy
from daemon.dispatcher import Dispatcher
from daemon.intake.accept import Acceptor, Submission
from daemon.rendering import Renderer
from daemon.store.sqlite import SqliteStore
from tests.support import VirtualClock, config_template, dispatcher_for, monitor_for, serve_api, until

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ADMIN_TOKEN = "ack-security-admin-token-0123456789"
SEND_TOKEN = "ack-security-send-token-0123456789"
TWILIO_TOKEN = "twilio-auth-token-0123456789abcd"
SLACK_SIGNING_SECRET = "slack-signing-secret-0123456789"
STATUS_CALLBACK = "https://backchannel.example.com/v1/callbacks/twilio"
ONCALL = "+15550100001"
STRANGER = "+15550199999"
LADDER = Escalation(
    (
        EscalationStep(timedelta(0), ("slack-oncall",)),
        EscalationStep(timedelta(minutes=5), ("sms-oncall",)),
    )
)
ROUTES = (Route("page", Matcher(), ("email",), LADDER),)
CHANNELS = ("email", "slack-oncall", "sms-oncall")
FAST = RetryPolicy(initial_s=0.05, max_s=0.2, multiplier=2, max_attempts=3)


@dataclass
class World:
    clock: VirtualClock
    store: SqliteStore
    dispatcher: Dispatcher
    acceptor: Acceptor
    channels: dict[str, FakeChannel]
    api: httpx.AsyncClient

    async def page(self) -> tuple[str, str]:
        """A critical notification escalating; its id and the ack code its first message carried."""
        (accepted,) = await self.acceptor.accept([Submission(Severity.CRITICAL, "db primary down")])
        message = await until(lambda: next(iter(self.channels["slack-oncall"].sent), None))
        assert message.notification_id == accepted.id and message.ack_code
        return accepted.id, message.ack_code

    async def acknowledged(self, nid: str) -> bool:
        view = await self.store.notification(nid)
        assert view is not None
        return any(a.outcome == "acknowledged" for a in view.attempts)

    async def sms_reply(self, sender: str, text: str) -> httpx.Response:
        form = {"MessageSid": "SM" + "0" * 32, "From": sender, "To": "+15550100000", "Body": text}
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(inbound_url(STATUS_CALLBACK), form)
        headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
        return await self.api.post("/v1/callbacks/twilio/inbound", content=urlencode(form), headers=headers)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = VirtualClock(T0)
    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    monitor = monitor_for(store, clock)
    await monitor.force(ProviderState.OUTAGE, "test")
    channels = {name: FakeChannel(name) for name in CHANNELS}
    policies = {name: ChannelPolicy(retry=FAST) for name in CHANNELS}
    renderer = Renderer(lambda: monitor.state)
    dispatcher = dispatcher_for(
        store, monitor, channels, policies, ROUTES, clock, poll_s=0.05, renderer=renderer
    )
    acceptor = Acceptor(store, lambda: ROUTES, clock, dispatcher.wake)
    account = TwilioAccount("sms-oncall", TWILIO_TOKEN, STATUS_CALLBACK, frozenset({ONCALL}))
    ctx = ApiContext(
        acceptor=acceptor,
        store=store,
        monitor=monitor,
        provider_name="test",
        tokens=lambda: {"admin": ADMIN_TOKEN, "alerts": SEND_TOKEN},
        grants=lambda: {"alerts": Grant(frozenset({"send"}))},
        draining=lambda: False,
        in_flight=lambda: dispatcher.in_flight,
        twilio_accounts=lambda: [account],
        slack_apps=lambda: [SlackApp("slack-oncall", SLACK_SIGNING_SECRET)],
        clock=clock,
    )
    running = asyncio.create_task(dispatcher.run())
    async with serve_api(ctx) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield World(clock, store, dispatcher, acceptor, channels, client)
    dispatcher.stop()
    await running
    await store.close()


async def test_sms_ack_from_an_unknown_number_acknowledges_nothing(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A stranger's reply with the right code stops nothing, is logged, and the escalation goes on."""
    nid, code = await world.page()
    with caplog.at_level(logging.WARNING, logger="daemon.api.ack"):
        answer = await world.sms_reply(STRANGER, f"ACK {code}")
    assert answer.status_code == 200
    assert not await world.acknowledged(nid)
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "ack.sms_unknown_sender"]
    assert record.__dict__["sender"] == STRANGER and code not in record.getMessage()
    world.clock.at += timedelta(minutes=5)
    world.dispatcher.wake()
    await until(lambda: world.channels["sms-oncall"].sent)


async def test_sms_answer_to_an_unknown_number_does_not_tell_whether_the_code_exists(world: World) -> None:
    """A real code, a made-up one and no code at all get the same empty TwiML: no SMS back."""
    _, code = await world.page()
    made_up = "ZZZZZZ" if code != "ZZZZZZ" else "YYYYYY"
    answers = [await world.sms_reply(STRANGER, text) for text in (f"ACK {code}", f"ACK {made_up}", "hi")]
    assert {(a.status_code, a.headers["content-type"], a.text) for a in answers} == {
        (200, "application/xml", TWIML_SILENCE)
    }
    assert "<Message>" not in answers[0].text


async def test_sms_ack_from_a_number_we_text_stops_the_escalation(world: World) -> None:
    """The on-call's reply acknowledges; the answer says so and the trail names the number."""
    nid, code = await world.page()
    answer = await world.sms_reply(ONCALL, f"ack {code.lower()}")
    assert answer.status_code == 200
    assert f"Acknowledged {code}" in answer.text
    view = await world.store.notification(nid)
    assert view is not None
    assert view.attempts[-1].detail == f"acknowledged by {ONCALL} via sms"


async def test_send_scoped_token_cannot_acknowledge_by_api(world: World) -> None:
    """POST /v1/notifications/{id}/ack with a ``send`` token is 403 and stops nothing; ``admin`` may."""
    nid, _ = await world.page()
    path = f"/v1/notifications/{nid}/ack"
    refused = await world.api.post(path, headers={"Authorization": f"Bearer {SEND_TOKEN}"})
    assert refused.status_code == 403
    assert not await world.acknowledged(nid)
    allowed = await world.api.post(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert allowed.status_code == 200
    assert await world.acknowledged(nid)


async def test_slack_signature_with_a_non_ascii_character_is_refused(world: World) -> None:
    """A forged X-Slack-Signature holding a non-ASCII byte is a 401 like any forgery, not a 500."""
    nid, _ = await world.page()
    action = {"action_id": "backchannel_ack", "value": nid}
    body = "payload=" + json.dumps({"type": "block_actions", "actions": [action]})
    headers = {
        "X-Slack-Request-Timestamp": str(int(world.clock.now().timestamp())),
        "X-Slack-Signature": "v0=\xe9".encode("latin-1"),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    answer = await world.api.post("/v1/callbacks/slack", content=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    assert not await world.acknowledged(nid)


def test_sms_repliers_are_the_sms_recipients_and_the_directory_phones() -> None:
    """The numbers heard come from every SMS channel's recipients and every directory person's phone."""
    sms = (
        "  sms-a: {{type: sms, account_sid: AC{sid}, auth_token: tok, from_number: '+14155550100',\n"
        "          recipients: ['+14155552671'], status_callback: '{callback}'}}\n"
        "  sms-b: {{type: sms, account_sid: AC{sid}, auth_token: tok, from_number: '+14155550100',\n"
        "          recipients: ['+4915110000001']}}\n"
        "routes: [{{name: all, match: {{}}, healthy: [email], outage: [sms-a]}}]\n"
        "directory:\n"
        "  people:\n"
        "    alice: {{email: [alice@test.example], phone: '+4915110000002'}}\n"
        "    bob: {{email: [bob@test.example]}}\n"
    )
    text = config_template(sms).format(
        store="/nonexistent/outbox.db", api_port=0, smtp_port=9, sid="0" * 32, callback=STATUS_CALLBACK
    )
    config = parse_config(text, env={"TOKEN": ADMIN_TOKEN})
    (account,) = with_repliers(twilio_accounts(config), config)
    assert account.channel == "sms-a"
    assert account.repliers == {"+14155552671", "+4915110000001", "+4915110000002"}
