"""Slack, SMS and webhook as the outage plan's steps, in the running daemon, against stand-ins."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from daemon.app import Daemon
from tests.acceptance.harness import free_port
from tests.servers import WebhookReceiver
from tests.stand_ins import twilio as twilio_stand_in
from tests.stand_ins.slack import Reply as SlackReply
from tests.stand_ins.slack import SlackStandIn
from tests.stand_ins.twilio import TwilioStandIn
from tests.support import ApiWorld, config_template, daemon_api, stand_ins, until

TOKEN = "backup-test-api-token-42"
SLACK_TOKEN = "xoxb-test-slack-token-0123456789"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-token-secret-987"
HOOK_SECRET = "whsec_" + base64.b64encode(b"backup-test-webhook-secret!").decode()
CONFIG = config_template("""\
  slack: {{type: slack, token: "${{SLACK_TOKEN}}", targets: ["#ops"], api_url: "{slack_url}/api/", pace: 50}}
  sms:
    type: sms
    account_sid: {sid}
    auth_token: "${{TWILIO_TOKEN}}"
    from_number: "+14155550100"
    recipients: ["+14155552671"]
    api_url: "{twilio_url}"
    status_callback: "http://127.0.0.1:{api_port}/v1/callbacks/twilio"
    pace: 50
  hook: {{type: webhook, url: "{hook_url}", secret: "${{HOOK_SECRET}}", allow_private: true}}
routes:
  - {{match: {{severity: [critical]}}, healthy: [email], outage: [slack, sms, hook]}}
  - {{match: {{}}, healthy: [email], outage: defer}}
dispatch: {{retry: {{initial: 50ms, max: 200ms, max_attempts: 3}}}}
""")


@dataclass
class World(ApiWorld):
    api: httpx.AsyncClient
    daemon: Daemon
    slack: SlackStandIn
    twilio: TwilioStandIn
    hook: WebhookReceiver

    async def critical(self, subject: str) -> str:
        response = await self.api.post("/v1/notifications", json={"severity": "critical", "subject": subject})
        notification_id: str = response.json()["id"]
        return notification_id


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    slack, twilio = SlackStandIn(SLACK_TOKEN), TwilioStandIn(TWILIO_SID, TWILIO_TOKEN)
    with WebhookReceiver() as hook:
        async with stand_ins(slack, twilio) as smtp:
            text = CONFIG.format(
                store=tmp_path / "outbox.db",
                api_port=free_port(),
                smtp_port=smtp.port,
                sid=TWILIO_SID,
                slack_url=f"http://127.0.0.1:{slack.port}",
                twilio_url=twilio.base_url,
                hook_url=hook.url,
            )
            env = {
                "TOKEN": TOKEN,
                "SLACK_TOKEN": SLACK_TOKEN,
                "TWILIO_TOKEN": TWILIO_TOKEN,
                "HOOK_SECRET": HOOK_SECRET,
            }
            async with daemon_api(text, TOKEN, env) as (daemon, api):
                await api.post("/v1/provider/override", json={"state": "outage", "reason": "test"})
                yield World(api, daemon, slack, twilio, hook)


async def test_outage_plan_starts_with_slack(world: World) -> None:
    """During an outage the first step, Slack, carries the critical notification."""
    nid = await world.critical("db down")
    await until(lambda: _status(world, nid, "delivered"))
    assert [p.channel for p in world.slack.posts] == ["C0OPS"]
    assert (await world.trail(nid))["attempts"][-1]["channel"] == "slack"


async def test_permanent_slack_error_fails_over_to_sms(world: World) -> None:
    """Slack's channel_not_found is permanent: the plan moves to SMS at once."""
    world.slack.fail_next(SlackReply(error="channel_not_found"))
    nid = await world.critical("db down")
    await until(lambda: _status(world, nid, "delivered"))
    assert [s.to for s in world.twilio.sent] == ["+14155552671"]
    outcomes = [(a["channel"], a["outcome"]) for a in (await world.trail(nid))["attempts"]]
    assert outcomes == [("slack", "failed"), ("sms", "delivered")]


async def test_undelivered_sms_moves_the_plan_on(world: World) -> None:
    """A signed 'undelivered' status callback fails the SMS step; the webhook gets the notification."""
    world.slack.fail_next(SlackReply(error="is_archived"))
    nid = await world.critical("payments down")
    await until(lambda: _status(world, nid, "delivered"))
    (sent,) = world.twilio.sent
    assert await world.twilio.post_status(sent, "undelivered", ErrorCode="30003") == 200
    (request,) = await world.hook.wait_for_async(1)
    assert request.json()["id"] == nid
    await until(lambda: _status(world, nid, "delivered"))
    outcomes = [(a["channel"], a["outcome"]) for a in (await world.trail(nid))["attempts"]]
    assert ("sms", "callback:failed") in outcomes
    assert outcomes[-1] == ("hook", "delivered")


async def test_forged_callback_is_refused(world: World) -> None:
    """A callback signed with the wrong token is a 403 and changes nothing."""
    world.slack.fail_next(SlackReply(error="is_archived"))
    nid = await world.critical("x")
    await until(lambda: _status(world, nid, "delivered"))
    (sent,) = world.twilio.sent
    assert await world.twilio.post_status(sent, "undelivered", auth_token="not-the-token") == 403
    assert await world.twilio.post_status(sent, "delivered") == 200
    attempts = (await world.trail(nid))["attempts"]
    assert attempts[-1]["outcome"] == "callback:delivered"
    assert world.hook.requests == []


async def test_channel_health_in_status(world: World) -> None:
    """GET /v1/status shows each channel's last success, last error and failures in a row."""
    world.slack.fail_next(SlackReply(error="internal_error"))
    nid = await world.critical("flaky")
    await until(lambda: _status(world, nid, "delivered"))
    channels = {c["channel"]: c for c in (await world.api.get("/v1/status")).json()["channels"]}
    assert channels["slack"]["consecutive_failures"] == 0
    assert "internal_error" in channels["slack"]["last_error"]
    assert channels["slack"]["last_success_at"] is not None


async def test_no_secret_in_logs_of_failing_sends(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Failing Slack, Twilio and webhook sends log no token, auth token or webhook secret."""
    caplog.set_level(logging.DEBUG)
    world.slack.fail_next(SlackReply(error="invalid_auth"))
    world.twilio.fail_next(twilio_stand_in.Reply(401, 20003, "Authenticate"))
    nid = await world.critical("secrets")
    await until(lambda: _status(world, nid, "delivered"))
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (SLACK_TOKEN, TWILIO_TOKEN, HOOK_SECRET, TOKEN):
        assert secret not in text


async def _status(world: World, nid: str, status: str) -> bool:
    return bool((await world.trail(nid))["status"] == status)


async def test_follow_up_goes_into_the_slack_thread(world: World) -> None:
    """A notification that follows another (a resolved alert) is posted in the first one's Slack thread."""
    first = await world.api.post(
        "/v1/notifications", json={"severity": "critical", "subject": "firing", "idempotency_key": "alert-7"}
    )
    await until(lambda: _status(world, first.json()["id"], "delivered"))
    second = await world.api.post(
        "/v1/notifications",
        json={"severity": "critical", "subject": "resolved", "labels": {"follows": "alert-7"}},
    )
    await until(lambda: _status(world, second.json()["id"], "delivered"))
    opening, follow_up = world.slack.posts
    assert follow_up.payload["thread_ts"] == opening.ts
    assert follow_up.channel == opening.channel
