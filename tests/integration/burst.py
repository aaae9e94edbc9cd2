"""The burst scenario shared by ``test_digest_burst.py`` and ``bench/burst.py``.

The daemon runs in this event loop with a Slack stand-in and a Twilio stand-in that answer 429
above the paced rates. In outage, ``count`` critical notifications for each of Slack and SMS are
accepted through the HTTP API over ``spread_s`` seconds; the run ends when the stand-ins have
received messages accounting for all of them (or at the deadline). What each stand-in received
is parsed back into :class:`Received` (one notification, or a digest and its count).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from daemon.app import Daemon
from tests.stand_ins.slack import SlackStandIn
from tests.stand_ins.twilio import TwilioStandIn
from tests.support import config_template, daemon_api, stand_ins

TOKEN = "digest-test-api-token-42"
SLACK_TOKEN = "xoxb-digest-slack-token-0123"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "digest-twilio-auth-token"
#: the stand-ins' token buckets: a little slack for loopback jitter, never two sends at once
STAND_IN_BURST = 1.5
CONFIG = config_template("""\
  slack:
    type: slack
    token: "${{SLACK_TOKEN}}"
    targets: ["#ops"]
    api_url: "{slack_url}"
    pace: {pace}
    digest: {{drain_target: {target_s}s, link: "https://status.example.com/v1/notifications?since={{since}}"}}
  sms:
    type: sms
    account_sid: {sid}
    auth_token: "${{TWILIO_TOKEN}}"
    from_number: "+14155550100"
    recipients: ["+14155552671"]
    api_url: "{twilio_url}"
    pace: {pace}
    digest: {{drain_target: {target_s}s, segments: 1}}
routes:
  - {{match: {{labels: {{to: slack}}}}, healthy: [email], outage: [slack]}}
  - {{match: {{labels: {{to: sms}}}}, healthy: [email], outage: [sms]}}
  - {{match: {{}}, healthy: [email], outage: defer}}
""")
_DIGEST = re.compile(r"Digest (D\w+): (\d+) (?:notifications|alerts)")
_SINGLE = re.compile(r"(?:slack|sms) (\d{3})")


@dataclass(frozen=True)
class Received:
    """One message a stand-in accepted: a digest of ``count``, or one notification (``number``)."""

    at: float
    text: str
    digest: str | None
    count: int
    number: int | None


@dataclass
class BurstRun:
    #: when each round of submissions had been accepted (both channels)
    accepted_at: list[float] = field(default_factory=list)
    #: when the first submission for each channel was sent (its acceptance is a little later)
    first_submitted: dict[str, float] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)
    slack: list[Received] = field(default_factory=list)
    sms: list[Received] = field(default_factory=list)
    slack_429: int = 0
    sms_429: int = 0
    done_at: float | None = None
    #: notification id -> (outcome, detail) of each attempt, read from the outbox at the end
    trails: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def parse(at: float, text: str) -> Received:
    if digest := _DIGEST.search(text):
        return Received(at, text, digest.group(1), int(digest.group(2)), None)
    single = _SINGLE.search(text)
    assert single is not None, text
    return Received(at, text, None, 1, int(single.group(1)))


def counted(received: list[Received]) -> int:
    return sum(r.count for r in received)


async def run_burst(
    tmp: Path, *, count: int = 500, spread_s: float = 10.0, pace: float = 1.0, target_s: float = 30.0,
    deadline_s: float = 90.0,
) -> BurstRun:  # fmt: skip
    """Run the scenario; the stand-ins limit at ``pace`` per second (SMS: segments per second)."""
    slack = SlackStandIn(SLACK_TOKEN, rate_per_s=pace, burst=STAND_IN_BURST)
    twilio = TwilioStandIn(TWILIO_SID, TWILIO_TOKEN, rate_per_s=pace, burst=STAND_IN_BURST)
    run = BurstRun()
    async with stand_ins(slack, twilio) as smtp:
        text = CONFIG.format(
            store=tmp / "outbox.db",
            api_port=0,
            smtp_port=smtp.port,
            sid=TWILIO_SID,
            slack_url=slack.base_url,
            twilio_url=twilio.base_url,
            pace=pace,
            target_s=target_s,
        )
        env = {"TOKEN": TOKEN, "SLACK_TOKEN": SLACK_TOKEN, "TWILIO_TOKEN": TWILIO_TOKEN}
        async with daemon_api(text, TOKEN, env, timeout=30) as (daemon, api):
            await _drive(api, run, slack, twilio, count, spread_s, deadline_s)
            run.trails = await _trails(daemon, run)
    run.slack_429, run.sms_429 = slack.rate_limited, twilio.rate_limited
    return run


async def _drive(
    api: httpx.AsyncClient, run: BurstRun, slack: SlackStandIn, twilio: TwilioStandIn,
    count: int, spread_s: float, deadline_s: float,
) -> None:  # fmt: skip
    await api.post("/v1/provider/override", json={"state": "outage"})
    rounds = 20
    per_round = count // rounds
    started = time.monotonic()
    for r in range(rounds):
        # Accept at a steady rate: round r is due spread_s * r / rounds after the start.
        await asyncio.sleep(max(0.0, started + spread_s * r / rounds - time.monotonic()))
        for to in ("slack", "sms"):
            numbers = range(r * per_round, (r + 1) * per_round)
            batch = [
                {"severity": "critical", "subject": f"{to} {i:03d} disk full", "labels": {"to": to}}
                for i in numbers
            ]
            run.first_submitted.setdefault(to, time.monotonic())
            answer = await api.post("/v1/notifications", json=batch)
            assert answer.status_code == 202, answer.text
            run.ids.setdefault(to, []).extend(answer.json()["ids"])
        run.accepted_at.append(time.monotonic())
    deadline = started + deadline_s
    while True:
        run.slack = [parse(p.at, p.payload["text"]) for p in slack.posts]
        run.sms = [parse(s.at, s.body) for s in twilio.sent]
        if counted(run.slack) >= count and counted(run.sms) >= count:
            run.done_at = time.monotonic()
            return
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def _trails(daemon: Daemon, run: BurstRun) -> dict[str, list[tuple[str, str]]]:
    trails = {}
    for nid in [nid for ids in run.ids.values() for nid in ids]:
        view = await daemon.store.notification(nid)
        assert view is not None
        trails[nid] = [(a.outcome, a.detail or "") for a in view.attempts]
    return trails
