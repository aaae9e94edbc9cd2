"""The dispatcher's digests against a real SQLite outbox and fake channels: trails, retries, failover."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from channels.base import ChannelError
from channels.digests import DIGEST_LABEL
from channels.fake import FakeChannel
from daemon.clock import SystemClock
from daemon.core.backoff import RetryPolicy
from daemon.core.model import ProviderState
from daemon.core.routing import Matcher, Route
from daemon.digesting import DigestPolicy
from daemon.dispatch_policy import ChannelPolicy
from daemon.intake.accept import Acceptor
from daemon.store.sqlite import SqliteStore
from tests.support import OutboxWorld, dispatcher_for, monitor_for, until

ROUTES = (Route("all", Matcher(), ("email",), ("backup", "hook")),)
FAST = RetryPolicy(initial_s=0.05, max_s=0.2, multiplier=2, max_attempts=3)
#: 10 sends a second and a 0.5 s target: a backlog of more than 5 is a burst
DIGEST = DigestPolicy(pace_per_s=10, drain_target_s=0.5, link="/v1/notifications?since={since}")


@dataclass
class World(OutboxWorld):
    store: SqliteStore
    acceptor: Acceptor
    backup: FakeChannel
    hook: FakeChannel

    async def burst(self, count: int, **labels: str) -> list[str]:
        """One critical sent alone while ``count`` more pile up behind it, then released."""
        self.backup.gate = asyncio.Event()
        first = await self.submit(1)
        await until(lambda: self.backup.in_flight == 1)
        rest = await self.submit(count, **labels)
        self.backup.gate.set()
        return first + rest


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = SystemClock()
    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    monitor = monitor_for(store, clock)
    channels = {name: FakeChannel(name) for name in ("email", "backup", "hook")}
    policies = {
        "email": ChannelPolicy(retry=FAST, primary=True),
        "backup": ChannelPolicy(retry=FAST, digest=DIGEST),
        "hook": ChannelPolicy(retry=FAST),
    }
    dispatcher = dispatcher_for(store, monitor, channels, policies, ROUTES, clock)
    monitor.on_mode_change(lambda _: dispatcher.request_sweep())
    await monitor.force(ProviderState.OUTAGE, "test")
    acceptor = Acceptor(store, lambda: ROUTES, clock, dispatcher.wake)
    task = asyncio.create_task(dispatcher.run())
    yield World(store, acceptor, channels["backup"], channels["hook"])
    dispatcher.stop()
    await task
    await store.close()


def _digests(channel: FakeChannel) -> list[str]:
    return [m.labels[DIGEST_LABEL] for m in channel.sent if DIGEST_LABEL in m.labels]


async def test_small_backlog_goes_one_by_one(world: World) -> None:
    """Five deliveries drain within the target at the pace: no digest."""
    ids = await world.submit(5)
    await until(lambda: world.all_delivered(ids))
    assert [m.notification_id for m in world.backup.sent] == ids


async def test_burst_sends_first_critical_alone_then_one_digest(world: World) -> None:
    """Past the target the first critical goes alone and the rest as one digest the trail names."""
    ids = await world.burst(20)
    await until(lambda: world.all_delivered(ids))
    sent = world.backup.sent
    assert [m.notification_id for m in sent[:2]] == ids[:2]
    (digest,) = _digests(world.backup)
    assert sent[2].subject == f"Digest {digest}: 19 notifications (19 critical)"
    assert "/v1/notifications?since=" in sent[2].body
    for nid in ids[2:]:
        ((channel, outcome, detail),) = await world.trail(nid)
        assert (channel, outcome) == ("backup", "delivered")
        assert re.match(rf"in digest {digest} of 19: ", detail), detail


async def test_failed_digest_leaves_each_delivery_its_own_retry(world: World) -> None:
    """A digest that fails puts every delivery it carried back with a retry; none is lost."""
    world.backup.script(None, None, ChannelError("503 busy"))
    ids = await world.burst(20)
    await until(lambda: world.all_delivered(ids))
    for nid in ids[2:]:
        outcomes = [(channel, outcome) for channel, outcome, _ in await world.trail(nid)]
        assert outcomes == [("backup", "retry"), ("backup", "delivered")]
    assert sum(1 for m in world.backup.attempts if DIGEST_LABEL in m.labels) >= 2


async def test_permanent_digest_failure_fails_each_over_to_the_next_step(world: World) -> None:
    """A digest refused for good moves every delivery it carried to the plan's next channel."""
    world.backup.script(None, None, ChannelError("channel archived", permanent=True))
    ids = await world.burst(20)
    await until(lambda: world.all_delivered(ids))
    assert {m.notification_id for m in world.hook.sent} == set(ids[2:])


async def test_duplicate_fingerprints_collapse_into_one_line(world: World) -> None:
    """Notifications sharing an Alertmanager fingerprint are one line of the digest, counted each."""
    ids = await world.burst(8, alert_fingerprint="abc123", alert_status="firing")
    await until(lambda: world.all_delivered(ids))
    digest = next(m for m in world.backup.sent if DIGEST_LABEL in m.labels)
    assert digest.subject.endswith(": 7 notifications (7 critical)")
    assert digest.body.splitlines()[0] == "• critical: n1 x7"
