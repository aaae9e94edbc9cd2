"""Review findings 5 and 7 against a real SQLite outbox: render bugs, stable digest ids, escalations.

A template that raises at send time sends the notification untemplated (a template never costs a
notification); a renderer bug beyond the template is recorded for its delivery (retried, then
failed over) while the dispatcher carries on. A digest retried carries the same id; an escalation
step in a burst goes alone, with its ack code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from channels.base import ChannelError, OutboundMessage
from channels.digests import DIGEST_LABEL
from channels.fake import FakeChannel
from daemon.clock import SystemClock
from daemon.core.backoff import RetryPolicy
from daemon.core.model import DeliveryState, Escalation, EscalationStep, ProviderState, Severity
from daemon.core.routing import Matcher, Route
from daemon.digesting import DigestPolicy
from daemon.dispatch_policy import ChannelPolicy
from daemon.dispatcher import Dispatcher
from daemon.intake.accept import Acceptor
from daemon.message_templates import TemplateBook, compile_pair
from daemon.rendering import Renderer
from daemon.store.base import StoreUnavailable
from daemon.store.sqlite import SqliteStore
from daemon.store.values import Claimed
from tests.support import OutboxWorld, dispatcher_for, monitor_for, until

ROUTES = (
    Route(
        "page",
        Matcher(labels={"page": "yes"}),
        ("email",),
        Escalation((EscalationStep(timedelta(0), ("backup",)),)),
    ),
    Route("plain", Matcher(labels={"via": "hook"}), ("email",), ("hook", "backup")),
    Route("all", Matcher(), ("email",), ("backup", "hook")),
)
FAST = RetryPolicy(initial_s=0.05, max_s=0.2, multiplier=2, max_attempts=3)
#: 10 sends a second and a 0.5 s target: a backlog of more than 5 is a burst
DIGEST = DigestPolicy(pace_per_s=10, drain_target_s=0.5)
#: compiles (the load-time sample has a team label), raises KeyError for a notification without one
TEMPLATE = compile_pair('{{ "{team}: ".format(**labels) }}{{ subject }}', None)
EXPLODE_LABEL = "explode"


class ExplodingRenderer(Renderer):
    """A renderer with a bug beyond any template: it raises for the channel the label names."""

    def render(self, channel: str, claimed: Claimed) -> OutboundMessage:
        if claimed.notification.labels.get(EXPLODE_LABEL) == channel:
            raise RuntimeError(f"renderer bug on {channel}")
        return super().render(channel, claimed)


@dataclass
class World(OutboxWorld):
    store: SqliteStore
    acceptor: Acceptor
    backup: FakeChannel
    hook: FakeChannel
    dispatching: asyncio.Task[None]
    dispatcher: Dispatcher

    async def hold_backup(self) -> list[str]:
        """One critical in flight on the backup channel, held there until :meth:`release_backup`."""
        self.backup.gate = asyncio.Event()
        first = await self.submit(1)
        await until(lambda: self.backup.in_flight == 1)
        return first

    def release_backup(self) -> None:
        assert self.backup.gate is not None
        self.backup.gate.set()

    def release_first_hold_next(self) -> None:
        """The held send finishes; the next one waits at a new gate (the burst behind it, claimed)."""
        held, self.backup.gate = self.backup.gate, asyncio.Event()
        assert held is not None
        held.set()


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
    book = TemplateBook(by_channel={"backup": TEMPLATE, "hook": TEMPLATE})
    renderer = ExplodingRenderer(lambda: monitor.state, book=lambda: book)
    dispatcher = dispatcher_for(store, monitor, channels, policies, ROUTES, clock, renderer=renderer)
    monitor.on_mode_change(lambda _: dispatcher.request_sweep())
    await monitor.force(ProviderState.OUTAGE, "test")
    acceptor = Acceptor(store, lambda: ROUTES, clock, dispatcher.wake)
    task = asyncio.create_task(dispatcher.run())
    yield World(store, acceptor, channels["backup"], channels["hook"], task, dispatcher)
    dispatcher.stop()
    await task
    await store.close()


def _subjects(channel: FakeChannel) -> dict[str, str]:
    return {m.notification_id: m.subject for m in channel.sent}


async def test_a_template_raising_at_render_sends_the_notification_untemplated(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A KeyError in a template on a digest and on a plain channel: sent with the notification's own text."""
    with caplog.at_level(logging.WARNING):
        digest_bare = await world.submit(2)
        digest_team = await world.submit(1, team="db")
        plain_bare = await world.submit(2, via="hook")
        plain_team = await world.submit(1, via="hook", team="db")
        await until(lambda: world.all_delivered(digest_bare + digest_team + plain_bare + plain_team))
    assert not world.dispatching.done()
    backup, hook = _subjects(world.backup), _subjects(world.hook)
    assert [backup[nid] for nid in digest_bare] == ["n0", "n1"]
    assert backup[digest_team[0]] == "db: n0"
    assert [hook[nid] for nid in plain_bare] == ["n0", "n1"]
    assert hook[plain_team[0]] == "db: n0"
    failed = [r for r in caplog.records if getattr(r, "event", None) == "template.failed"]
    assert {r.notification_id for r in failed} == set(digest_bare + plain_bare)  # type: ignore[attr-defined]


async def test_a_render_bug_is_recorded_and_the_dispatcher_carries_on(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A renderer raising on either kind of channel retries, fails over, and holds up nothing else."""
    with caplog.at_level(logging.ERROR):
        (on_digest,) = await world.submit(1, explode="backup")
        (on_plain,) = await world.submit(1, via="hook", explode="hook")
        others = await world.submit(3) + await world.submit(3, via="hook")
        await until(lambda: world.all_delivered([on_digest, on_plain, *others]))
    assert not world.dispatching.done()
    for nid, bad, good in ((on_digest, "backup", "hook"), (on_plain, "hook", "backup")):
        trail = await world.trail(nid)
        assert [(c, o) for c, o, _ in trail] == [
            (bad, "retry"),
            (bad, "retry"),
            (bad, "failed"),
            (good, "delivered"),
        ]
        assert all(d.startswith("internal error: RuntimeError") for _, _, d in trail[:3]), trail
    bugs = [r for r in caplog.records if getattr(r, "event", None) == "delivery.bug"]
    assert len(bugs) == 6


async def test_a_retried_burst_keeps_its_digest_id(world: World) -> None:
    """A digest that failed comes back whole, under the same id and idempotency key."""
    world.backup.script(None, None, ChannelError("503 busy"))
    first = await world.hold_backup()
    rest = await world.submit(20)
    world.release_backup()
    await until(lambda: world.all_delivered(first + rest))
    digests = [m for m in world.backup.attempts if DIGEST_LABEL in m.labels]
    assert len(digests) == 2
    assert digests[0].labels[DIGEST_LABEL] == digests[1].labels[DIGEST_LABEL]
    assert all(m.idempotency_key == m.labels[DIGEST_LABEL] == m.notification_id for m in digests)


async def test_an_escalation_in_a_burst_goes_alone_with_its_ack_code(world: World) -> None:
    """An escalation step caught in a burst is sent on its own, acknowledgeable, not folded into a digest."""
    first = await world.hold_backup()
    rest = await world.submit(10)
    (page,) = await world.submit(1, Severity.HIGH, page="yes")
    rest += await world.submit(10, Severity.INFO)
    world.release_backup()
    await until(lambda: world.all_delivered([*first, *rest, page]))
    (message,) = [m for m in world.backup.sent if m.notification_id == page]
    assert message.acknowledgeable and message.ack_code
    assert DIGEST_LABEL not in message.labels
    digests = [m for m in world.backup.sent if DIGEST_LABEL in m.labels]
    assert len(digests) == 1 and digests[0].subject.endswith(": 19 notifications (9 critical, 10 info)")
    ((_, outcome, detail),) = await world.trail(page)
    assert outcome == "delivered" and not detail.startswith("in digest")


async def test_an_escalation_step_acknowledged_while_it_waits_for_its_slot_is_not_sent(world: World) -> None:
    """Claimed into the burst's waiting list, acknowledged while the slot ahead of it is busy:
    superseded when its slot comes, never sent."""
    first = await world.hold_backup()
    rest = await world.submit(10)
    (page,) = await world.submit(1, Severity.HIGH, page="yes")
    world.release_first_hold_next()  # the slot after the first claims the burst, page included

    async def waiting_for_its_slot() -> bool:
        view = await world.store.notification(page)
        assert view is not None
        return view.deliveries[0].state == DeliveryState.IN_FLIGHT and world.backup.in_flight == 1

    await until(waiting_for_its_slot)
    assert page not in {m.notification_id for m in world.backup.sent}
    assert await world.store.acknowledge(page, "alice", "api", datetime.now(UTC)) == "acknowledged"
    world.release_backup()

    async def superseded() -> bool:
        view = await world.store.notification(page)
        assert view is not None
        return view.deliveries[0].state == DeliveryState.SUPERSEDED

    await until(superseded)
    await until(lambda: world.all_delivered([*first, *rest]))
    assert page not in {m.notification_id for m in world.backup.sent}
    assert ("backup", "retry", "acknowledged before its send slot: not sent") in await world.trail(page)


async def test_stopping_with_a_failing_store_does_not_hang_on_the_waiting_claims(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims waiting for a send slot are put back at stop; if the store cannot record, stop anyway."""
    await world.hold_backup()
    await world.submit(10)
    world.release_first_hold_next()
    await until(lambda: world.backup.in_flight == 1 and len(world.backup.attempts) >= 2)

    async def broken(*_: object) -> None:
        raise StoreUnavailable("the disk is gone")

    monkeypatch.setattr(world.store, "record", broken)
    world.dispatcher.stop()
    world.release_backup()
    await asyncio.wait_for(asyncio.shield(world.dispatching), 30)  # the drain's grace is 2 s
