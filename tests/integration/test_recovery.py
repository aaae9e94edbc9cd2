"""Recovery in the running daemon: the directory in delivery, one catch-up per person, outage over in thread.

Real parts on loopback: SQLite in ``tmp_path``, aiosmtpd as the provider's SMTP server, the Slack
and Twilio stand-ins. The operator override drives the outage and the recovery.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from daemon.app import Daemon
from daemon.catchup import HORIZON
from daemon.store.values import ListFilter
from tests.acceptance.harness import free_port
from tests.servers import ReceivedMail, SmtpServer
from tests.stand_ins import slack as slack_stand_in
from tests.stand_ins.slack import SlackStandIn
from tests.stand_ins.twilio import TwilioStandIn
from tests.support import ApiWorld, daemon_api, stand_ins, until

TOKEN = "recovery-test-api-token-42"
SLACK_TOKEN = "xoxb-recovery-slack-token-0123456789"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-recovery-auth-token-987"
CATCH_UP = "While p was down"
CONFIG = """\
store: {{path: {store}}}
api: {{listen: "127.0.0.1:{api_port}", tokens: [{{name: t, token: "${{TOKEN}}"}}]}}
provider:
  name: p
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false}}
  mail_from: bc@test.example
  announce: true
  checks: [{{type: smtp, every: 1h, timeout: 2s}}]
channels:
  email: {{type: email, to: [ops@test.example]}}
  slack:
    {{type: slack, token: "${{SLACK_TOKEN}}", targets: ["#ops"], dm_recipients: true,
     api_url: "{slack_url}/api/", pace: 50}}
  sms:
    {{type: sms, account_sid: {sid}, auth_token: "${{TWILIO_TOKEN}}", from_number: "+14155550100",
     api_url: "{twilio_url}", pace: 50}}
directory:
  people:
    alice: {{email: [alice@test.example], slack: U0ALICE, phone: "+14155552671"}}
    bob: {{email: [bob@test.example], slack: U0BOB}}
    carol: {{email: [carol@test.example], phone: "+14155552673", timezone: Europe/Berlin}}
routes:
  - {{name: db, match: {{labels: {{team: db}}}}, healthy: [email], outage: [sms], fallback: carol}}
  - {{name: critical, match: {{severity: [critical]}}, healthy: [email], outage: [slack]}}
  - {{name: rest, match: {{}}, healthy: [email], outage: defer}}
dispatch: {{retry: {{initial: 50ms, max: 200ms, max_attempts: 3}}}}
"""


@dataclass
class World(ApiWorld):
    api: httpx.AsyncClient
    daemon: Daemon
    slack: SlackStandIn
    twilio: TwilioStandIn
    smtp: SmtpServer


def _config(tmp_path: Path, smtp: SmtpServer, slack: SlackStandIn, twilio: TwilioStandIn, port: int) -> str:
    return CONFIG.format(
        store=tmp_path / "outbox.db",
        api_port=port,
        smtp_port=smtp.port,
        sid=TWILIO_SID,
        slack_url=f"http://127.0.0.1:{slack.port}",
        twilio_url=twilio.base_url,
    )


ENV = {"TOKEN": TOKEN, "SLACK_TOKEN": SLACK_TOKEN, "TWILIO_TOKEN": TWILIO_TOKEN}


def _running(text: str) -> contextlib.AbstractAsyncContextManager[tuple[Daemon, httpx.AsyncClient]]:
    return daemon_api(text, TOKEN, ENV)


@contextlib.asynccontextmanager
async def _stand_ins() -> AsyncIterator[tuple[SmtpServer, SlackStandIn, TwilioStandIn]]:
    slack, twilio = SlackStandIn(SLACK_TOKEN), TwilioStandIn(TWILIO_SID, TWILIO_TOKEN)
    async with stand_ins(slack, twilio) as smtp:
        yield smtp, slack, twilio


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with (
        _stand_ins() as (smtp, slack, twilio),
        _running(_config(tmp_path, smtp, slack, twilio, free_port())) as (daemon, api),
    ):
        yield World(api, daemon, slack, twilio, smtp)


async def _outage_with_sends(world: World) -> dict[str, str]:
    """Outage; three critical notifications go by Slack and SMS; recovery. Their ids by name."""
    await world.api.post("/v1/provider/override", json={"state": "outage", "reason": "test"})
    ids = {
        "to_alice": await world.submit("disk full", ["alice@test.example"]),
        "db": await world.submit(
            "db down", ["alice@test.example", "stranger@else.example"], labels={"team": "db"}
        ),
        "to_bob": await world.submit("queue stuck", ["bob@test.example"]),
    }

    async def delivered() -> bool:
        return all([await _is(world, nid, "delivered") for nid in ids.values()])

    await until(delivered)
    await world.api.delete("/v1/provider/override")
    return ids


async def _is(world: World, nid: str, status: str) -> bool:
    return await world.status(nid) == status


def _catch_ups(smtp: SmtpServer) -> list[EmailMessage]:
    return [m for m in (_parse(r) for r in smtp.messages) if CATCH_UP in str(m["Subject"])]


def _parse(received: ReceivedMail) -> EmailMessage:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_recipients_reach_their_people_through_the_directory(world: World) -> None:
    """Slack DMs the people's Slack ids, SMS texts their phones; an unknown address reaches the fallback."""
    await _outage_with_sends(world)
    dms = sorted(p.channel for p in world.slack.posts if p.channel.startswith("D"))
    assert dms == ["D0ALICE", "D0BOB"]
    assert sorted(s.to for s in world.twilio.sent) == ["+14155552671", "+14155552673"]


async def test_each_person_gets_one_catch_up_of_what_reached_them(world: World) -> None:
    """After recovery each person gets exactly one email listing exactly what reached them elsewhere."""
    ids = await _outage_with_sends(world)

    async def three() -> bool:
        return len(_catch_ups(world.smtp)) >= 3

    await until(three)
    by_person = {str(m["To"]): m for m in _catch_ups(world.smtp)}
    assert sorted(by_person) == ["alice@test.example", "bob@test.example", "carol@test.example"]
    expected = {
        "alice@test.example": {(ids["to_alice"], "slack"), (ids["db"], "sms")},
        "bob@test.example": {(ids["to_bob"], "slack")},
        "carol@test.example": {(ids["db"], "sms")},
    }
    for address, message in by_person.items():
        assert _lines(message) == expected[address], address
    assert "CET" in by_person["carol@test.example"].get_content()  # her time zone


async def test_restart_after_recovery_sends_no_second_catch_up(tmp_path: Path) -> None:
    """A restart (which looks for a missed catch-up) and a repeated run queue nothing new."""
    async with _stand_ins() as (smtp, slack, twilio):
        async with _running(_config(tmp_path, smtp, slack, twilio, free_port())) as (daemon, api):
            await _outage_with_sends(World(api, daemon, slack, twilio, smtp))

            async def queued() -> bool:
                return len(await _catch_up_rows(daemon)) == 3

            await until(queued)
        async with _running(_config(tmp_path, smtp, slack, twilio, free_port())) as (daemon, _):
            assert await daemon.catchup.run(horizon=HORIZON) == 0
            assert len(await _catch_up_rows(daemon)) == 3


async def test_outage_over_is_posted_in_the_outage_thread(world: World) -> None:
    """The recovery announcement goes to Slack, which announced the outage, in that message's thread."""
    await world.api.post("/v1/provider/override", json={"state": "outage", "reason": "test"})

    def opening() -> list[slack_stand_in.Post]:
        return [p for p in world.slack.posts if "is DOWN" in str(p.payload.get("text"))]

    async def announced() -> bool:
        return bool(opening())

    await until(announced)
    await world.api.delete("/v1/provider/override")

    def over() -> list[slack_stand_in.Post]:
        return [p for p in world.slack.posts if "is back" in str(p.payload.get("text"))]

    async def recovered() -> bool:
        return bool(over())

    await until(recovered)
    (down,), (back,) = opening(), over()
    assert back.channel == down.channel
    assert back.payload["thread_ts"] == down.ts


async def _catch_up_rows(daemon: Daemon) -> list[str]:
    views = await daemon.store.search(ListFilter(limit=500))
    return [v.notification.id for v in views if v.notification.labels.get("event") == "recovery.catch_up"]


def _lines(message: EmailMessage) -> set[tuple[str, str]]:
    """(notification id, channel) for each line of a catch-up email."""
    found = set()
    for line in message.get_content().splitlines():
        if " via " in line:
            channel = line.split(" via ", 1)[1].split(":", 1)[0]
            found.add((line.rsplit("(", 1)[1].rstrip(")"), channel))
    return found


async def test_routes_without_catch_up_are_left_out(tmp_path: Path) -> None:
    """A route with catch_up: false contributes nothing to anyone's catch-up."""
    async with _stand_ins() as (smtp, slack, twilio):
        text = _config(tmp_path, smtp, slack, twilio, free_port())
        text = text.replace("outage: [slack]}", "outage: [slack], catch_up: false}")
        async with _running(text) as (daemon, api):
            world = World(api, daemon, slack, twilio, smtp)
            ids = await _outage_with_sends(world)

            async def two() -> bool:
                return len(await _catch_up_rows(daemon)) == 2

            await until(two)
            await until(lambda: _sent(smtp, 2))
            by_person = {str(m["To"]): _lines(m) for m in _catch_ups(smtp)}
            assert by_person == {
                "alice@test.example": {(ids["db"], "sms")},
                "carol@test.example": {(ids["db"], "sms")},
            }


async def _sent(smtp: SmtpServer, n: int) -> bool:
    return len(_catch_ups(smtp)) >= n


async def test_a_transition_stored_unannounced_is_announced_at_the_next_start(tmp_path: Path) -> None:
    """A run stopped between storing a transition and queueing its announcement (kill -9 there;
    ``announce: false`` stands for that window here): the next start announces it, and a start
    after that does not again; the recovery then follows in the outage's thread."""
    async with _stand_ins() as (smtp, slack, twilio):

        def config() -> str:
            return _config(tmp_path, smtp, slack, twilio, free_port())

        async with _running(config().replace("announce: true", "announce: false")) as (_, api):
            await api.post("/v1/provider/override", json={"state": "outage", "reason": "test"})

        def posts(text: str) -> list[slack_stand_in.Post]:
            return [p for p in slack.posts if text in str(p.payload.get("text"))]

        for _ in range(2):
            async with _running(config()) as (daemon, api):
                await daemon.announcer.drain()
                assert len(await _announcements(daemon, "outage")) == 1
                await until(lambda: posts("is DOWN"))
        async with _running(config()) as (daemon, api):
            await api.delete("/v1/provider/override")
            (back,) = await until(lambda: posts("is back"))
        (down,) = posts("is DOWN")
        assert (back.channel, back.payload["thread_ts"]) == (down.channel, down.ts)


async def _announcements(daemon: Daemon, state: str) -> list[str]:
    views = await daemon.store.search(ListFilter(limit=500))
    return [v.notification.id for v in views if v.notification.labels.get("state") == state]
