"""Escalation with virtual time: the dispatcher, a real SQLite outbox, fake channels and the HTTP API
on a real socket, acknowledged by API, by a signed Slack button click and by an SMS reply."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from channels import slack_interactions as slack
from channels.fake import FakeChannel
from daemon.api.ack import SlackApp, inbound_url
from daemon.api.app import ApiContext
from daemon.api.callbacks import TwilioAccount
from daemon.core.backoff import RetryPolicy
from daemon.core.model import Escalation, EscalationStep, ProviderState, Severity
from daemon.core.routing import Matcher, Route
from daemon.dispatch_policy import ChannelPolicy
from daemon.dispatcher import Dispatcher
from daemon.intake.accept import Acceptor, Submission
from daemon.rendering import Renderer
from daemon.store.sqlite import SqliteStore
from tests.support import VirtualClock, dispatcher_for, monitor_for, serve_api, until

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOKEN = "escalation-test-token-0123456789"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TWILIO_TOKEN = "twilio-auth-token-0123456789abcd"
STATUS_CALLBACK = "https://backchannel.example.com/v1/callbacks/twilio"
LADDER = Escalation(
    (
        EscalationStep(timedelta(0), ("slack-oncall",)),
        EscalationStep(timedelta(minutes=5), ("sms-oncall",)),
        EscalationStep(timedelta(minutes=15), ("sms-secondary", "slack-ops")),
    )
)
ROUTES = (Route("page", Matcher(), ("email",), LADDER),)
CHANNELS = ("email", "slack-oncall", "sms-oncall", "sms-secondary", "slack-ops")
FAST = RetryPolicy(initial_s=0.05, max_s=0.2, multiplier=2, max_attempts=3)


@dataclass
class World:
    clock: VirtualClock
    store: SqliteStore
    dispatcher: Dispatcher
    acceptor: Acceptor
    channels: dict[str, FakeChannel]
    api: httpx.AsyncClient

    async def page(self) -> str:
        (accepted,) = await self.acceptor.accept([Submission(Severity.CRITICAL, "db primary down")])
        return accepted.id

    async def advance(self, delta: timedelta) -> None:
        self.clock.at += delta
        self.dispatcher.wake()

    def sent(self) -> dict[str, list[str]]:
        return {name: [m.notification_id for m in c.sent] for name, c in self.channels.items() if c.sent}

    async def quiet(self) -> None:
        """Let the dispatcher make a few passes: whatever was due has been sent."""
        for _ in range(3):
            passed = asyncio.Event()
            self.dispatcher.on_pass(passed.set)
            self.dispatcher.wake()
            await asyncio.wait_for(passed.wait(), 10)


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
    ctx = ApiContext(
        acceptor=acceptor,
        store=store,
        monitor=monitor,
        provider_name="test",
        tokens=lambda: {"oncall": TOKEN},
        draining=lambda: False,
        in_flight=lambda: dispatcher.in_flight,
        twilio_accounts=lambda: [
            TwilioAccount("sms-oncall", TWILIO_TOKEN, STATUS_CALLBACK, frozenset({"+15550100001"}))
        ],
        clock=clock,
        slack_apps=lambda: [SlackApp("slack-oncall", SIGNING_SECRET)],
    )
    running = asyncio.create_task(dispatcher.run())
    async with serve_api(ctx) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield World(clock, store, dispatcher, acceptor, channels, client)
    dispatcher.stop()
    await running
    await store.close()


async def test_unacknowledged_escalation_reaches_each_step_at_its_time(world: World) -> None:
    """Slack at once; SMS at +5m, not before; the secondary and #ops at +15m."""
    nid = await world.page()
    await until(lambda: world.sent() == {"slack-oncall": [nid]})
    assert world.channels["slack-oncall"].sent[0].acknowledgeable
    await world.advance(timedelta(minutes=4, seconds=59))
    await world.quiet()
    assert world.sent() == {"slack-oncall": [nid]}
    await world.advance(timedelta(seconds=1))
    await until(lambda: "sms-oncall" in world.sent())
    assert world.channels["sms-oncall"].sent[0].ack_code is not None
    await world.advance(timedelta(minutes=10))
    await until(lambda: len(world.sent()) == 4)
    assert world.sent() == {name: [nid] for name in CHANNELS if name != "email"}


async def test_acknowledged_by_api_sends_no_further_steps(world: World) -> None:
    """POST /v1/notifications/{id}/ack (admin scope) stops the escalation; the trail says who."""
    nid = await world.page()
    await until(lambda: "slack-oncall" in world.sent())
    response = await world.api.post(
        f"/v1/notifications/{nid}/ack", json={"by": "alice"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200
    assert response.json() == {"id": nid, "result": "acknowledged"}
    await _no_further_steps(world, nid)
    trail = (
        await world.api.get(f"/v1/notifications/{nid}", headers={"Authorization": f"Bearer {TOKEN}"})
    ).json()
    assert trail["attempts"][-1]["outcome"] == "acknowledged"
    assert trail["attempts"][-1]["detail"] == "acknowledged by alice via api"


async def test_api_ack_needs_the_admin_scope_and_a_known_id(world: World) -> None:
    """No token is 401; an unknown id is 404."""
    assert (await world.api.post("/v1/notifications/nope/ack")).status_code == 401
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert (await world.api.post("/v1/notifications/nope/ack", headers=headers)).status_code == 404


async def test_acknowledged_by_slack_button_sends_no_further_steps(world: World) -> None:
    """A click on Acknowledge, signed with the app's signing secret, stops the escalation."""
    nid = await world.page()
    await until(lambda: "slack-oncall" in world.sent())
    response = await _slack_click(world, nid, SIGNING_SECRET)
    assert response.status_code == 200
    assert response.json() == {"result": "acknowledged"}
    await _no_further_steps(world, nid)
    view = await world.store.notification(nid)
    assert view is not None
    assert view.attempts[-1].detail == "acknowledged by alice.oncall via slack"


async def test_forged_slack_click_is_refused(world: World) -> None:
    """A click signed with another secret (or too old) is 401 and acknowledges nothing."""
    nid = await world.page()
    await until(lambda: "slack-oncall" in world.sent())
    assert (await _slack_click(world, nid, "not-the-signing-secret")).status_code == 401
    stale = world.clock.now() - timedelta(minutes=6)
    assert (await _slack_click(world, nid, SIGNING_SECRET, at=stale)).status_code == 401
    await world.advance(timedelta(minutes=5))
    await until(lambda: "sms-oncall" in world.sent())


async def test_acknowledged_by_sms_reply_sends_no_further_steps(world: World) -> None:
    """A reply "ACK <code>" through Twilio's signed inbound webhook stops the escalation."""
    nid = await world.page()
    await world.advance(timedelta(minutes=5))
    await until(lambda: "sms-oncall" in world.sent())
    code = world.channels["sms-oncall"].sent[0].ack_code
    assert code is not None
    response = await _sms_reply(world, f"ack {code.lower()}", TWILIO_TOKEN)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert f"Acknowledged {code}" in response.text
    await _no_further_steps(world, nid)
    view = await world.store.notification(nid)
    assert view is not None
    assert view.attempts[-1].detail == "acknowledged by +15550100001 via sms"


async def test_sms_reply_with_an_unknown_code_or_forged_signature_acknowledges_nothing(world: World) -> None:
    """A wrong code is answered in TwiML; a bad signature is 403; the escalation goes on."""
    await world.page()
    await until(lambda: "slack-oncall" in world.sent())
    unknown = await _sms_reply(world, "ACK ZZZZZZ", TWILIO_TOKEN)
    assert "No open alert with code ZZZZZZ" in unknown.text
    assert (
        await _sms_reply(
            world, f"ACK {world.channels['slack-oncall'].sent[0].ack_code}", "wrong-token-0123456789abcdef"
        )
    ).status_code == 403
    await world.advance(timedelta(minutes=5))
    await until(lambda: "sms-oncall" in world.sent())


async def _no_further_steps(world: World, nid: str) -> None:
    await world.advance(timedelta(hours=1))
    await world.quiet()
    assert set(world.sent()) <= {"slack-oncall", "sms-oncall"}
    view = await world.store.notification(nid)
    assert view is not None
    assert not [d for d in view.deliveries if d.state.value == "pending"]


async def _slack_click(world: World, nid: str, secret: str, at: datetime | None = None) -> httpx.Response:
    payload = {
        "type": "block_actions",
        "user": {"id": "U024BE7LH", "username": "alice.oncall"},
        "actions": [{"action_id": slack.ACK_ACTION, "value": nid, "type": "button"}],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int((at or world.clock.now()).timestamp()))
    headers = {
        slack.TIMESTAMP_HEADER: timestamp,
        slack.SIGNATURE_HEADER: slack.signature(secret, timestamp, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return await world.api.post("/v1/callbacks/slack", content=body, headers=headers)


async def _sms_reply(world: World, text: str, auth_token: str) -> httpx.Response:
    form = {"MessageSid": "SM" + "0" * 32, "From": "+15550100001", "To": "+15550100000", "Body": text}
    signature = RequestValidator(auth_token).compute_signature(inbound_url(STATUS_CALLBACK), form)
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    return await world.api.post("/v1/callbacks/twilio/inbound", content=urlencode(form), headers=headers)
