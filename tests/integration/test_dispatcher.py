"""The dispatcher against a real SQLite outbox and fake channels."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from channels.base import ChannelError
from channels.fake import FakeChannel
from daemon.clock import SystemClock
from daemon.core.backoff import RetryPolicy
from daemon.core.model import ProviderState, Severity
from daemon.core.routing import Matcher, Route
from daemon.dispatch_policy import ChannelPolicy
from daemon.dispatcher import Dispatcher
from daemon.intake.accept import Acceptor, Submission
from daemon.monitor import ProviderMonitor
from daemon.send_slots import RECORDING_PER_SLOT
from daemon.store.sqlite import SqliteStore
from tests.support import dispatcher_for, monitor_for, until

ROUTES = (
    Route("critical", Matcher(severities=frozenset({Severity.CRITICAL})), ("email", "backup"), ("hook",)),
    Route("rest", Matcher(), ("email",), None),
)
FAST = RetryPolicy(initial_s=0.05, max_s=0.2, multiplier=2, max_attempts=3)


@dataclass
class World:
    store: SqliteStore
    monitor: ProviderMonitor
    dispatcher: Dispatcher
    acceptor: Acceptor
    channels: dict[str, FakeChannel]

    async def submit(self, severity: Severity, subject: str) -> str:
        (accepted,) = await self.acceptor.accept([Submission(severity=severity, subject=subject)])
        return accepted.id

    async def status(self, notification_id: str) -> str:
        view = await self.store.notification(notification_id)
        assert view is not None
        return view.status


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = SystemClock()
    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    monitor = monitor_for(store, clock)
    channels = {name: FakeChannel(name) for name in ("email", "backup", "hook")}
    policies = {
        "email": ChannelPolicy(retry=FAST, concurrency=2, primary=True),
        "backup": ChannelPolicy(retry=FAST),
        "hook": ChannelPolicy(retry=FAST),
    }
    dispatcher = dispatcher_for(store, monitor, channels, policies, ROUTES, clock)
    monitor.on_mode_change(lambda _: dispatcher.request_sweep())
    acceptor = Acceptor(store, lambda: ROUTES, clock, dispatcher.wake)
    task = asyncio.create_task(dispatcher.run())
    yield World(store, monitor, dispatcher, acceptor, channels)
    dispatcher.stop()
    await task
    await store.close()


async def test_delivers_by_email_while_healthy(world: World) -> None:
    """A notification accepted while healthy goes out by email, with its id as idempotency key."""
    nid = await world.submit(Severity.INFO, "hello")
    await until(lambda: world.channels["email"].sent)
    assert world.channels["email"].sent[0].idempotency_key == nid
    await until(_status_is(world, nid, "delivered"))


def _status_is(world: World, nid: str, status: str) -> Callable[[], object]:
    async def check() -> bool:
        return await world.status(nid) == status

    return check


async def test_transient_error_is_retried(world: World) -> None:
    """A transient failure is retried after a backoff and then delivered."""
    world.channels["email"].script(ChannelError("421 try later"))
    nid = await world.submit(Severity.INFO, "retry me")
    await until(_status_is(world, nid, "delivered"))
    view = await world.store.notification(nid)
    assert view is not None
    assert [a.outcome for a in view.attempts] == ["retry", "delivered"]


async def test_retry_after_is_honoured(world: World) -> None:
    """The next attempt is not made before the channel's Retry-After."""
    world.channels["hook"].script(ChannelError("429", retry_after_s=0.6))
    await world.monitor.force(ProviderState.OUTAGE, "test")
    nid = await world.submit(Severity.CRITICAL, "rate limited")
    await until(_status_is(world, nid, "delivered"))
    view = await world.store.notification(nid)
    assert view is not None
    first, second = view.attempts
    assert (second.started_at - first.finished_at).total_seconds() >= 0.55


async def test_permanent_failure_moves_to_next_step(world: World) -> None:
    """A permanent failure on email hands the notification to the plan's next channel."""
    world.channels["email"].script(ChannelError("550 no such user", permanent=True))
    nid = await world.submit(Severity.CRITICAL, "fallback")
    await until(_status_is(world, nid, "delivered"))
    assert [m.notification_id for m in world.channels["backup"].sent] == [nid]


async def test_exhausted_retries_fail_the_last_step(world: World) -> None:
    """After max_attempts transient failures the step fails; with no step left, the notification fails."""
    world.channels["email"].fail_always(ChannelError("timeout"))
    nid = await world.submit(Severity.INFO, "doomed")
    await until(_status_is(world, nid, "failed"))
    assert len(world.channels["email"].attempts) == FAST.max_attempts


async def test_concurrency_cap_per_channel(world: World) -> None:
    """No more than the channel's concurrency are in flight at once."""
    gate = asyncio.Event()
    world.channels["email"].gate = gate
    for i in range(6):
        await world.submit(Severity.INFO, f"n{i}")
    await until(lambda: world.channels["email"].in_flight == 2)
    await asyncio.sleep(0.3)  # give a misbehaving dispatcher the chance to over-claim
    assert world.channels["email"].in_flight == 2
    gate.set()
    await until(lambda: len(world.channels["email"].sent) == 6)


async def test_a_send_recording_its_outcome_frees_its_slot(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap is on sends: one done while its outcome waits for the disk frees its slot, and the
    sends still recording are bounded too (RECORDING_PER_SLOT per slot)."""
    disk = asyncio.Event()
    record = world.store.record

    async def slow_record(*args: Any, **kwargs: Any) -> None:
        await disk.wait()
        await record(*args, **kwargs)

    monkeypatch.setattr(world.store, "record", slow_record)
    ids = [await world.submit(Severity.INFO, f"n{i}") for i in range(12)]
    bound = 2 * RECORDING_PER_SLOT  # email's concurrency is 2
    await until(lambda: len(world.channels["email"].sent) == bound)
    await asyncio.sleep(0.3)  # give a misbehaving dispatcher the chance to over-claim
    assert len(world.channels["email"].sent) == bound
    assert world.channels["email"].in_flight == 0
    disk.set()
    await until(lambda: len(world.channels["email"].sent) == 12)
    for nid in ids:
        await until(_status_is(world, nid, "delivered"))


async def test_outage_reroutes_and_recovery_releases_held(world: World) -> None:
    """In outage critical mail goes to the backup and the rest is held; recovery sends the held by email."""
    world.channels["email"].gate = asyncio.Event()  # nothing leaves by email before the outage
    critical = await world.submit(Severity.CRITICAL, "db down")
    other = await world.submit(Severity.INFO, "report")
    await until(lambda: world.channels["email"].in_flight == 2)
    world.channels["email"].fail_always(ChannelError("connection refused", service_fault=True))
    world.channels["email"].gate.set()
    await until(lambda: world.monitor.state == ProviderState.OUTAGE)
    await until(_status_is(world, critical, "delivered"))
    assert [m.notification_id for m in world.channels["hook"].sent] == [critical]
    await until(_status_is(world, other, "held"))
    world.channels["email"].fail_always(None)
    await world.monitor.force(ProviderState.HEALTHY, "recovered")
    await until(_status_is(world, other, "delivered"))
    assert world.channels["email"].sent[-1].notification_id == other


async def test_a_row_that_cannot_be_read_is_left_alone_when_the_mode_changes(world: World) -> None:
    """Held mail re-planned at the recovery, one of it a row the codec cannot read (a severity
    another release wrote): that one stays held, the rest goes out, and the dispatcher goes on."""
    await world.monitor.force(ProviderState.OUTAGE, "test")
    held = [await world.submit(Severity.INFO, f"report {i}") for i in range(3)]
    await until(_status_is(world, held[2], "held"))
    with sqlite3.connect(world.store.path) as conn:
        conn.execute("UPDATE notifications SET severity = 'page' WHERE id = ?", (held[1],))
    await world.monitor.force(ProviderState.HEALTHY, "recovered")
    await until(_status_is(world, held[0], "delivered"))
    await until(_status_is(world, held[2], "delivered"))
    later = await world.submit(Severity.INFO, "after")
    await until(_status_is(world, later, "delivered"))
    with sqlite3.connect(world.store.path) as conn:
        assert conn.execute("SELECT status FROM notifications WHERE id = ?", (held[1],)).fetchall() == [
            ("held",)
        ]
    assert held[1] not in [m.notification_id for m in world.channels["email"].sent]


async def test_failing_channel_does_not_block_others(world: World) -> None:
    """A channel stuck on every send leaves the other channels delivering."""
    world.channels["email"].gate = asyncio.Event()
    for i in range(3):
        await world.submit(Severity.INFO, f"stuck {i}")
    await world.monitor.force(ProviderState.OUTAGE, "test")
    nid = await world.submit(Severity.CRITICAL, "goes through")
    await until(_status_is(world, nid, "delivered"))
    world.channels["email"].gate.set()


async def test_a_mailbox_full_for_a_while_keeps_its_mail_queued_and_the_provider_healthy(
    world: World,
) -> None:
    """452 4.2.2 (the server will take it later) past every attempt: still delivered in the end, and
    no passive failure reached health tracking (two would declare an outage here)."""
    before = world.monitor.state
    full = ChannelError("452 4.2.2 Mailbox full", later=True)
    world.channels["email"].script(*[full] * (FAST.max_attempts + 1))
    nid = await world.submit(Severity.INFO, "patient")
    await until(_status_is(world, nid, "delivered"))
    assert world.monitor.state == before
    assert (await world.store.provider()).events == ()


async def test_a_mailbox_full_for_a_critical_alert_fails_over_to_the_next_step(world: World) -> None:
    """The same refusal on a plan with a step after email (critical: email, then backup): the usual
    attempts, then the backup channel, not days of waiting for the mailbox."""
    full = ChannelError("452 4.2.2 Mailbox full", later=True)
    world.channels["email"].script(*[full] * (FAST.max_attempts + 5))
    nid = await world.submit(Severity.CRITICAL, "db down")
    await until(_status_is(world, nid, "delivered"))
    assert [m.notification_id for m in world.channels["backup"].sent] == [nid]
    assert (len(world.channels["email"].attempts), world.channels["email"].sent) == (FAST.max_attempts, [])


async def test_our_own_network_failing_keeps_mail_queued_and_the_provider_healthy(world: World) -> None:
    """A send that failed on our own network (the provider's name did not resolve) past every
    attempt: kept queued as a provider fault is, then delivered, and no passive failure reached
    health tracking (two would declare an outage here)."""
    before = world.monitor.state
    ours = ChannelError("cannot resolve smtp.example", service_fault=True, local=True)
    world.channels["email"].script(*[ours] * (FAST.max_attempts + 1))
    nid = await world.submit(Severity.INFO, "patient")
    await until(_status_is(world, nid, "delivered"))
    assert world.monitor.state == before
    assert (await world.store.provider()).events == ()


async def test_provider_faults_do_not_exhaust_primary_retries(world: World) -> None:
    """Email failing because the provider is down keeps retrying instead of failing the notification."""
    await world.monitor.force(ProviderState.HEALTHY, "pinned so the failures cannot declare an outage")
    world.channels["email"].script(*[ChannelError("421 busy", service_fault=True)] * (FAST.max_attempts + 1))
    nid = await world.submit(Severity.INFO, "patient")
    await until(_status_is(world, nid, "delivered"))


async def test_a_replan_that_fails_by_a_bug_does_not_stop_delivery(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The re-plan a reload owes raising (a bug, not the store): logged, and sends go on; before,
    the exception ended the dispatcher, and an owed re-plan would end it again at every start."""

    async def broken(mode: str) -> int:
        raise RuntimeError("a bug in the walk")

    monkeypatch.setattr(world.dispatcher._rerouter, "replan", broken)
    world.dispatcher.request_replan()
    await until(
        lambda: any("re-planning the unsent notifications failed" in r.message for r in caplog.records)
    )
    sent = await world.submit(Severity.INFO, "after the failed re-plan")
    await until(_status_is(world, sent, "delivered"))
