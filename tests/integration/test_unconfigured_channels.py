"""A channel removed or renamed before a restart, on both backends: what waited for it is not
stranded. The routes' notifications get the new policy's plan on the first pass (as after a
reload); a plan made here keeps its steps, and a step on a channel no node has fails after
:data:`~daemon.dispatcher.UNCONFIGURED_GRACE`, handing the notification to its next step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import pytest

from channels.fake import FakeChannel
from daemon.clock import SystemClock
from daemon.core.backoff import RetryPolicy
from daemon.core.model import Notification, Plan, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.dispatch_policy import ChannelPolicy
from daemon.dispatcher import UNCONFIGURED_GRACE, Dispatcher
from daemon.ids import new_id
from daemon.store.base import NewNotification, Store
from tests.support import dispatcher_for, monitor_for, until

#: the policy before the restart: everything to a channel called "pager"
BEFORE = (Route("all", Matcher(), ("pager",), ("pager",)),)
#: after it: "pager" is gone, everything goes by email
AFTER = (Route("all", Matcher(), ("email",), ("email",)),)
FAST = RetryPolicy(initial_s=0.05, max_s=0.2, multiplier=2, max_attempts=3)


def notification(subject: str, at: datetime) -> Notification:
    return Notification(new_id(at), f"key-{subject}", at, Severity.CRITICAL, subject, "body")


def pinned(subject: str, at: datetime, steps: tuple[str, ...]) -> NewNotification:
    """As a drill or an announcement is planned: by its maker, the same steps in both modes."""
    plans = {mode: Plan(route="drill", mode=mode, steps=steps) for mode in ("healthy", "outage")}
    return NewNotification(notification(subject, at), plans, pinned=True)


async def status(store: Store, notification_id: str) -> str:
    view = await store.notification(notification_id)
    assert view is not None
    return view.status


def is_status(store: Store, notification_id: str, wanted: str) -> Callable[[], object]:
    async def check() -> bool:
        return await status(store, notification_id) == wanted

    return check


@pytest.fixture
async def restarted(store: Store) -> AsyncIterator[Callable[[], Dispatcher]]:
    """Start, after the test has filled the outbox, a dispatcher with the "after" configuration."""
    tasks: list[tuple[Dispatcher, asyncio.Task[None]]] = []

    def start() -> Dispatcher:
        clock = SystemClock()
        channels = {name: FakeChannel(name) for name in ("email", "hook")}
        policies = {"email": ChannelPolicy(retry=FAST, primary=True), "hook": ChannelPolicy(retry=FAST)}
        dispatcher = dispatcher_for(store, monitor_for(store, clock), channels, policies, AFTER, clock)
        dispatcher.channels = channels  # type: ignore[attr-defined]
        tasks.append((dispatcher, asyncio.create_task(dispatcher.run())))
        return dispatcher

    yield start
    for dispatcher, task in tasks:
        dispatcher.stop()
        await task


def sent(dispatcher: Dispatcher, channel: str) -> list[str]:
    channels: dict[str, FakeChannel] = dispatcher.channels  # type: ignore[attr-defined]
    return [m.notification_id for m in channels[channel].sent]


async def test_a_routed_notification_gets_the_new_policys_plan_at_start(
    store: Store, restarted: Callable[[], Dispatcher]
) -> None:
    """Planned for "pager" before the restart, sent by email after it, without a reload."""
    now = SystemClock().now()
    routed = notification("routed", now)
    (accepted,) = await store.accept([NewNotification(routed, plans_for(routed, BEFORE))], now)
    dispatcher = restarted()
    await until(lambda: sent(dispatcher, "email") == [accepted.id])
    await until(is_status(store, accepted.id, "delivered"))
    view = await store.notification(accepted.id)
    assert view is not None
    assert view.plan == ("email",)


async def test_a_pinned_step_on_a_missing_channel_fails_over_after_the_grace(
    store: Store, restarted: Callable[[], Dispatcher]
) -> None:
    """Due on "pager" for longer than the grace: that step fails, naming why, and the plan's next
    step sends it; one due for less keeps waiting (another node may have the channel)."""
    now = SystemClock().now()
    old, fresh = now - UNCONFIGURED_GRACE - timedelta(minutes=1), now
    (stale,) = await store.accept([pinned("stale", old, ("pager", "hook"))], old)
    (waiting,) = await store.accept([pinned("waiting", fresh, ("pager", "hook"))], fresh)
    dispatcher = restarted()
    passes = 0

    def count() -> None:
        nonlocal passes
        passes += 1

    dispatcher.on_pass(count)
    await until(lambda: sent(dispatcher, "hook") == [stale.id])
    await until(is_status(store, stale.id, "delivered"))
    view = await store.notification(stale.id)
    assert view is not None
    assert [(a.channel, a.outcome) for a in view.attempts] == [("pager", "failed"), ("hook", "delivered")]
    assert view.attempts[0].detail == "channel 'pager' is not configured"
    target = passes + 3
    await until(lambda: passes >= target)
    assert await status(store, waiting.id) == "pending"
    assert sent(dispatcher, "hook") == [stale.id]
