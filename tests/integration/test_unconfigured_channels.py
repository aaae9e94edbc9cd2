"""A channel removed or renamed before a restart, on both backends: what waited for it is not
stranded. On the first pass the routes' notifications planned for it, a relayed message's
follow-up among them, get the routes' plan (and nothing else is re-planned); a plan made here
keeps its steps, and a step on a channel this node does not have fails once due for longer than
:data:`~daemon.claiming.UNCONFIGURED_GRACE`, handing the notification to its next step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from channels.fake import FakeChannel
from daemon.claiming import UNCONFIGURED_GRACE
from daemon.clock import SystemClock
from daemon.core.backoff import RetryPolicy
from daemon.core.model import Notification, Plan, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.dispatch_policy import ChannelPolicy
from daemon.dispatcher import Dispatcher
from daemon.ids import new_id
from daemon.refusals import follow_up
from daemon.store.base import Store
from daemon.store.values import NewNotification
from tests.support import dispatcher_for, monitor_for, until

#: the policy before the restart: everything to a channel called "pager"
BEFORE = (Route("all", Matcher(), ("pager",), ("pager",)),)
#: after it: "pager" is gone, everything goes by email
AFTER = (Route("all", Matcher(), ("email",), ("email",)),)
FAST = RetryPolicy(initial_s=0.05, max_s=0.2, multiplier=2, max_attempts=3)


class Clock(SystemClock):
    """The system's clock, moved forward by ``ahead``."""

    ahead = timedelta(0)

    def now(self) -> datetime:
        return super().now() + self.ahead


@dataclass
class Restarted:
    store: Store
    clock: Clock = field(default_factory=Clock)
    channels: dict[str, FakeChannel] = field(default_factory=dict)
    passes: int = 0
    dispatcher: Dispatcher | None = None

    def sent(self, channel: str) -> list[str]:
        return [m.notification_id for m in self.channels[channel].sent]

    async def passes_made(self, count: int) -> None:
        target = self.passes + count
        await until(lambda: self.passes >= target)

    async def status(self, notification_id: str) -> str:
        view = await self.store.notification(notification_id)
        assert view is not None
        return view.status

    def is_status(self, notification_id: str, wanted: str) -> Callable[[], object]:
        async def check() -> bool:
            return await self.status(notification_id) == wanted

        return check


@pytest.fixture
async def restarted(store: Store) -> AsyncIterator[Callable[[], Restarted]]:
    """Start, after the test has filled the outbox, a dispatcher with the "after" configuration."""
    started: list[tuple[Dispatcher, asyncio.Task[None]]] = []
    world = Restarted(store)

    def start() -> Restarted:
        world.channels.update({name: FakeChannel(name) for name in ("email", "hook")})
        policies = {"email": ChannelPolicy(retry=FAST, primary=True), "hook": ChannelPolicy(retry=FAST)}
        monitor = monitor_for(store, world.clock)
        dispatcher = dispatcher_for(store, monitor, world.channels, policies, AFTER, world.clock)

        def count() -> None:
            world.passes += 1

        dispatcher.on_pass(count)
        world.dispatcher = dispatcher
        started.append((dispatcher, asyncio.create_task(dispatcher.run())))
        return world

    yield start
    for dispatcher, task in started:
        dispatcher.stop()
        await task


def notification(subject: str, at: datetime, raw: bytes | None = None) -> Notification:
    return Notification(new_id(at), f"key-{subject}", at, Severity.CRITICAL, subject, "body", raw=raw)


def routed(subject: str, at: datetime, routes: tuple[Route, ...] = BEFORE) -> NewNotification:
    n = notification(subject, at)
    return NewNotification(n, plans_for(n, routes))


def pinned(subject: str, at: datetime, steps: tuple[str, ...]) -> NewNotification:
    """As a drill or an announcement is planned: by its maker, the same steps in both modes."""
    plans = {mode: Plan(route="drill", mode=mode, steps=steps) for mode in ("healthy", "outage")}
    return NewNotification(notification(subject, at), plans, pinned=True)


async def test_a_routed_notification_planned_for_a_missing_channel_gets_the_routes_plan(
    store: Store, restarted: Callable[[], Restarted]
) -> None:
    """Planned for "pager" before the restart: sent by email after it, without a reload; one
    accepted after the start (an intake worker still on the old routes) is not re-planned again."""
    now = SystemClock().now()
    (before,) = await store.accept([routed("before", now)], now)
    world = restarted()
    await until(lambda: world.sent("email") == [before.id])
    await until(world.is_status(before.id, "delivered"))
    view = await store.notification(before.id)
    assert view is not None
    assert view.plan == ("email",)
    (after,) = await store.accept([routed("after", now)], now)
    await world.passes_made(3)
    assert await world.status(after.id) == "pending"
    assert world.sent("email") == [before.id]


async def test_a_restart_re_plans_nothing_whose_channels_are_all_there(
    store: Store, restarted: Callable[[], Restarted]
) -> None:
    """A plan that differs from the routes but names configured channels is left as it is: a
    restart (a crash, the watchdog) does not restart plans from their first step."""
    now = SystemClock().now()
    (kept,) = await store.accept([routed("kept", now, (Route("all", Matcher(), ("hook",), ("hook",)),))], now)
    world = restarted()
    await until(lambda: world.sent("hook") == [kept.id])
    assert world.sent("email") == []


async def test_a_relay_follow_up_on_a_missing_channel_gets_the_routes_plan(
    store: Store, restarted: Callable[[], Restarted]
) -> None:
    """A follow-up of relayed mail (raw mail, planned on the channel that relayed it) whose channel
    is gone goes to the routes, as a mode change sends it, rather than fail unreported."""
    now = SystemClock().now()
    original = notification("nightly job", now, raw=b"Subject: nightly job\r\n\r\nbody\r\n")
    item = follow_up("smarthost", original, ["busy@example.com"], now)
    (accepted,) = await store.accept([item], now)
    world = restarted()
    await until(lambda: world.sent("email") == [accepted.id])


async def test_a_pinned_step_on_a_missing_channel_fails_over_after_the_grace(
    store: Store, restarted: Callable[[], Restarted]
) -> None:
    """A drill's step on "pager" waits while another node might have the channel; past the grace
    it fails, naming why, and the plan's next step sends the notification."""
    now = SystemClock().now()
    (drill,) = await store.accept([pinned("drill", now, ("pager", "hook"))], now)
    world = restarted()
    await world.passes_made(3)
    assert await world.status(drill.id) == "pending"
    world.clock.ahead = UNCONFIGURED_GRACE - timedelta(seconds=30)
    await world.passes_made(3)
    assert await world.status(drill.id) == "pending"
    world.clock.ahead = UNCONFIGURED_GRACE + timedelta(seconds=1)
    await until(lambda: world.sent("hook") == [drill.id])
    await until(world.is_status(drill.id, "delivered"))
    view = await store.notification(drill.id)
    assert view is not None
    assert [(a.channel, a.outcome) for a in view.attempts] == [("pager", "failed"), ("hook", "delivered")]
    assert view.attempts[0].detail == "channel 'pager' is not configured"
    assert not any(d.state == "in_flight" for d in view.deliveries)


async def test_a_pinned_notification_with_no_step_left_fails(
    store: Store, restarted: Callable[[], Restarted]
) -> None:
    """Every stranded step in one go (more than one batch), each notification marked failed."""
    long_ago = SystemClock().now() - UNCONFIGURED_GRACE - timedelta(minutes=1)
    items = [pinned(f"announce-{n}", long_ago, ("pager",)) for n in range(250)]
    accepted = await store.accept(items, long_ago)
    world = restarted()
    for a in accepted:
        await until(world.is_status(a.id, "failed"))
    assert (await store.queue()).notifications == {"failed": 250}
