"""The recovery catch-up survives a store error and a change of leader, and lists only what arrived.

Review findings 8 and 9. Real parts on loopback: SQLite in ``tmp_path``, aiosmtpd as the
provider's SMTP server, the Slack and Twilio stand-ins (whose status callbacks are signed and
posted to the daemon's API). The operator override drives the outage and the recovery.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.app import Daemon
from daemon.core.backoff import RetryPolicy
from daemon.store.base import StoreError
from daemon.store.values import Accepted, ListFilter, NewNotification
from tests.acceptance.harness import free_port
from tests.servers import SmtpServer
from tests.stand_ins.slack import SlackStandIn
from tests.stand_ins.twilio import TwilioStandIn
from tests.support import ApiWorld, config_template, daemon_api, stand_ins, until

TOKEN = "catchup-fixes-api-token-42"
SLACK_TOKEN = "xoxb-catchup-fixes-slack-token-0123456789"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-catchup-fixes-auth-token-987"
ENV = {"TOKEN": TOKEN, "SLACK_TOKEN": SLACK_TOKEN, "TWILIO_TOKEN": TWILIO_TOKEN}
CATCH_UP = "While p was down"
ALICE_PHONE, CAROL_PHONE = "+14155552671", "+14155552673"
CONFIG = config_template("""\
  slack:
    {{type: slack, token: "${{SLACK_TOKEN}}", targets: ["#ops"], dm_recipients: true,
     api_url: "{slack_url}/api/", pace: 50}}
  sms:
    {{type: sms, account_sid: {sid}, auth_token: "${{TWILIO_TOKEN}}", from_number: "+14155550100",
     api_url: "{twilio_url}", status_callback: "http://127.0.0.1:{api_port}/v1/callbacks/twilio", pace: 50}}
directory:
  people:
    alice: {{email: [alice@test.example], slack: U0ALICE, phone: "+14155552671"}}
    bob: {{email: [bob@test.example], slack: U0BOB}}
    carol: {{email: [carol@test.example], phone: "+14155552673"}}
routes:
  - {{name: db, match: {{labels: {{team: db}}}}, healthy: [email], outage: [sms]}}
  - {{name: critical, match: {{severity: [critical]}}, healthy: [email], outage: [slack]}}
  - {{name: rest, match: {{}}, healthy: [email], outage: defer}}
dispatch: {{retry: {{initial: 50ms, max: 200ms, max_attempts: 3}}}}
""")


@dataclass
class World(ApiWorld):
    api: httpx.AsyncClient
    daemon: Daemon
    twilio: TwilioStandIn
    smtp: SmtpServer

    async def all_delivered(self, *nids: str) -> bool:
        return all([await self.status(nid) == "delivered" for nid in nids])

    async def outage(self) -> None:
        await self.api.post("/v1/provider/override", json={"state": "outage", "reason": "test"})

    async def recover(self) -> None:
        await self.api.delete("/v1/provider/override")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    slack, twilio = SlackStandIn(SLACK_TOKEN), TwilioStandIn(TWILIO_SID, TWILIO_TOKEN)
    async with stand_ins(slack, twilio) as smtp:
        text = CONFIG.format(
            store=tmp_path / "outbox.db",
            api_port=free_port(),
            smtp_port=smtp.port,
            sid=TWILIO_SID,
            slack_url=f"http://127.0.0.1:{slack.port}",
            twilio_url=twilio.base_url,
        )
        async with daemon_api(text, TOKEN, ENV) as (daemon, api):
            yield World(api, daemon, twilio, smtp)


async def _outage_with_sends(world: World) -> dict[str, str]:
    """Outage; a Slack DM to alice, one to bob, an SMS to carol, all delivered; then recovery."""
    await world.outage()
    ids = {
        "alice": await world.submit("disk full", ["alice@test.example"]),
        "bob": await world.submit("queue stuck", ["bob@test.example"]),
        "carol": await world.submit("db slow", ["carol@test.example"], labels={"team": "db"}),
    }
    await until(lambda: world.all_delivered(*ids.values()))
    await world.recover()
    return ids


def _catch_ups(smtp: SmtpServer) -> dict[str, list[EmailMessage]]:
    """The catch-up emails received, by recipient."""
    found: dict[str, list[EmailMessage]] = {}
    for received in smtp.messages:
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if CATCH_UP in str(message["Subject"]):
            found.setdefault(str(message["To"]), []).append(message)
    return found


def _lines(message: EmailMessage) -> set[tuple[str, str]]:
    """(notification id, channel) for each line of a catch-up email."""
    found = set()
    for line in message.get_content().splitlines():
        if " via " in line:
            channel = line.split(" via ", 1)[1].split(":", 1)[0]
            found.add((line.rsplit("(", 1)[1].rstrip(")"), channel))
    return found


async def _catch_up_rows(daemon: Daemon) -> int:
    views = await daemon.store.search(ListFilter(limit=500))
    return sum(v.notification.labels.get("event") == "recovery.catch_up" for v in views)


def _fail_first_catch_up(world: World, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The store refuses the first write of catch-up emails; the calls refused, counted."""
    accept = world.daemon.store.accept
    refused: list[int] = []

    async def flaky(items: Sequence[NewNotification], now: datetime, **hooks: Any) -> list[Accepted]:
        if not refused and any(i.notification.idempotency_key.startswith("catchup:") for i in items):
            refused.append(1)
            raise StoreError("database is locked")
        return await accept(items, now, **hooks)

    monkeypatch.setattr(world.daemon.store, "accept", flaky)
    return refused


async def test_store_error_in_the_catch_up_is_retried(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first catch-up run fails at the store; the retry queues it: exactly one email per person."""
    refused = _fail_first_catch_up(world, monkeypatch)
    with caplog.at_level(logging.ERROR, logger="daemon.catchup"):
        ids = await _outage_with_sends(world)
        await until(lambda: len(_catch_ups(world.smtp)) == 3)
    assert refused == [1]
    events = [getattr(r, "event", None) for r in caplog.records if r.name == "daemon.catchup"]
    assert events == ["catchup.failed"]
    by_person = _catch_ups(world.smtp)
    assert {to: len(messages) for to, messages in by_person.items()} == {
        "alice@test.example": 1,
        "bob@test.example": 1,
        "carol@test.example": 1,
    }
    assert _lines(by_person["carol@test.example"][0]) == {(ids["carol"], "sms")}
    assert await world.daemon.catchup.run() == 0  # a repeat finds every key taken
    assert await _catch_up_rows(world.daemon) == 3


async def test_new_leader_runs_a_catch_up_the_last_one_never_queued(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader that stopped before queuing the catch-up: the node elected next queues it, once."""
    stopped: list[int] = []

    async def dies_first() -> int:
        stopped.append(1)
        return 0

    monkeypatch.setattr(world.daemon.catchup, "after_recovery", dies_first)
    ids = await _outage_with_sends(world)
    await until(lambda: stopped and world.daemon.monitor.mode == "healthy")
    assert await _catch_up_rows(world.daemon) == 0
    await world.daemon.monitor.lead()  # elected, as daemon.leadership does
    await until(lambda: len(_catch_ups(world.smtp)) == 3)
    by_person = {to: _lines(m) for to, (m,) in _catch_ups(world.smtp).items()}
    assert by_person == {
        "alice@test.example": {(ids["alice"], "slack")},
        "bob@test.example": {(ids["bob"], "slack")},
        "carol@test.example": {(ids["carol"], "sms")},
    }
    assert await world.daemon.catchup.run() == 0  # elected again, or restarted: nothing new
    assert await _catch_up_rows(world.daemon) == 3


async def test_sms_reported_undelivered_is_not_listed(world: World) -> None:
    """An SMS Twilio later reported undelivered is left out of the catch-up; one delivered stays in."""
    await world.outage()
    lost = await world.submit("db down", ["alice@test.example"], labels={"team": "db"})
    slack = await world.submit("disk full", ["alice@test.example"])
    kept = await world.submit("db slow", ["carol@test.example"], labels={"team": "db"})
    await until(lambda: world.all_delivered(lost, slack, kept))
    (to_alice,) = [s for s in world.twilio.sent if s.to == ALICE_PHONE]
    assert await world.twilio.post_status(to_alice, "undelivered", ErrorCode="30003") == 200

    async def failed() -> bool:
        return (await world.trail(lost))["status"] == "failed"

    await until(failed)
    await world.recover()
    await until(lambda: len(_catch_ups(world.smtp)) == 2)
    by_person = {to: _lines(m) for to, (m,) in _catch_ups(world.smtp).items()}
    assert by_person == {
        "alice@test.example": {(slack, "slack")},
        "carol@test.example": {(kept, "sms")},
    }


async def test_shutdown_stops_the_retries(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catch-up waiting a minute to retry a store that keeps failing ends at once when the daemon stops."""
    accept = world.daemon.store.accept
    refused: list[int] = []

    async def broken(items: Sequence[NewNotification], now: datetime, **hooks: Any) -> list[Accepted]:
        if any(i.notification.idempotency_key.startswith("catchup:") for i in items):
            refused.append(1)
            raise StoreError("the disk is gone")
        return await accept(items, now, **hooks)

    monkeypatch.setattr(world.daemon.store, "accept", broken)
    monkeypatch.setattr(world.daemon.catchup, "_retry", RetryPolicy(initial_s=120.0, max_s=120.0))
    await _outage_with_sends(world)
    await until(lambda: refused)  # the recovery's run waits to retry
    waiting = asyncio.create_task(world.daemon.catchup.run())
    await until(lambda: len(refused) == 2)  # and so does this one
    world.daemon.catchup.stop()
    assert await asyncio.wait_for(waiting, 5) == 0
    assert len(refused) == 2
