"""Escalation and acknowledgement in the outbox, on both backends (SQLite, PostgreSQL).

Part of the shared store suite (the ``store``/``make_store`` fixtures run each test on both).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.core.health import HealthSnapshot
from daemon.core.model import Escalation, EscalationStep, Notification, Plan, ProviderState, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.store.base import Store
from daemon.store.values import NewNotification, Outcome
from tests.integration.conftest import StoreFactory

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(minutes=1)
LADDER = Escalation(
    (
        EscalationStep(timedelta(0), ("slack",)),
        EscalationStep(timedelta(minutes=5), ("sms",)),
        EscalationStep(timedelta(minutes=15), ("sms2", "ops")),
    )
)
ROUTES = (
    Route("page", Matcher(severities=frozenset({Severity.CRITICAL})), ("email",), LADDER),
    Route("rest", Matcher(), ("email",), ("slack",)),
)


def note(n: int, severity: Severity = Severity.CRITICAL) -> NewNotification:
    notification = Notification(f"01JEXAMPLE{n:016d}", f"key-{n}", T0, severity, f"subject {n}")
    return NewNotification(notification, plans_for(notification, ROUTES))


async def outage(store: Store, at: datetime = T0) -> None:
    await store.save_provider(HealthSnapshot(natural=ProviderState.OUTAGE, since=at), None, at)


async def deliver(store: Store, channel: str, at: datetime, kind: str = "delivered") -> list[str]:
    """Claim what is due on ``channel`` at ``at`` and record ``kind`` for each; their notification ids."""
    claimed = await store.claim(channel, 10, at, at + LEASE)
    outcomes = [Outcome(c.delivery.id, kind, at, at, "test") for c in claimed]  # type: ignore[arg-type]
    await store.record(outcomes, at)
    return [c.notification.id for c in claimed]


async def test_escalation_steps_fall_due_at_their_times(store: Store) -> None:
    """Each step is claimable only once ``after`` has passed since acceptance; fan-out within a step."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    assert await deliver(store, "slack", T0) == [accepted.id]
    assert await deliver(store, "sms", T0 + timedelta(minutes=4, seconds=59)) == []
    assert await deliver(store, "sms", T0 + timedelta(minutes=5)) == [accepted.id]
    assert await deliver(store, "ops", T0 + timedelta(minutes=14)) == []
    later = T0 + timedelta(minutes=15)
    assert await deliver(store, "sms2", later) == [accepted.id]
    assert await deliver(store, "ops", later) == [accepted.id]
    view = await store.notification(accepted.id)
    assert view is not None
    assert view.status == "delivered"
    assert view.plan == ("slack", "sms", "sms2", "ops")
    assert [d.step for d in view.deliveries] == [0, 1, 2, 2]


async def test_escalation_survives_a_restart(make_store: StoreFactory) -> None:
    """The later steps are rows with their due times: a reopened store still sends them on time."""
    first = make_store()
    await first.open()
    await outage(first)
    (accepted,) = await first.accept([note(1)], T0)
    await first.close()
    again = make_store()
    await again.open()
    try:
        assert (await again.due())["sms"] == T0 + timedelta(minutes=5)
        assert await deliver(again, "sms", T0 + timedelta(minutes=5)) == [accepted.id]
    finally:
        await again.close()


async def test_acknowledge_stops_later_steps(store: Store) -> None:
    """An acknowledgement supersedes the steps not yet sent and shows in the delivery trail."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    await deliver(store, "slack", T0)
    at = T0 + timedelta(minutes=2)
    assert await store.acknowledge(accepted.id, "alice", "slack", at) == "acknowledged"
    assert await deliver(store, "sms", T0 + timedelta(hours=1)) == []
    view = await store.notification(accepted.id)
    assert view is not None
    assert [d.state.value for d in view.deliveries] == ["delivered", "superseded", "superseded", "superseded"]
    assert view.attempts[-1].outcome == "acknowledged"
    assert view.attempts[-1].detail == "acknowledged by alice via slack"
    assert await store.acknowledge(accepted.id, "bob", "api", at) == "already"
    assert await store.acknowledge("no-such-id", "bob", "api", at) == "not_found"


async def test_acknowledging_a_delivered_failover_notification_is_finished(store: Store) -> None:
    """Nothing is left to stop for a failover plan that already delivered."""
    (accepted,) = await store.accept([note(1, Severity.INFO)], T0)
    await deliver(store, "email", T0)
    assert await store.acknowledge(accepted.id, "alice", "api", T0) == "finished"


async def test_acknowledging_before_any_send_ends_the_notification(store: Store) -> None:
    """Acknowledged before anything was sent: nothing is sent, and a mode change re-plans nothing."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    assert await store.acknowledge(accepted.id, "alice", "api", T0) == "acknowledged"
    assert await deliver(store, "slack", T0) == []
    view = await store.notification(accepted.id)
    assert view is not None
    assert view.status == "acknowledged"
    assert await store.reroute_candidates("healthy", 10) == []


async def test_failed_step_makes_the_next_step_due_at_once(store: Store) -> None:
    """A channel that fails for good does not leave the on-call waiting for the next step's time."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    failed_at = T0 + timedelta(seconds=30)
    await deliver(store, "slack", failed_at, kind="failed")
    assert (await store.due())["sms"] == failed_at
    assert await deliver(store, "sms", failed_at) == [accepted.id]
    assert await deliver(store, "ops", failed_at) == []


async def test_every_step_failing_fails_the_notification(store: Store) -> None:
    """When no step is left that could reach anyone, the notification has failed."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    for channel in ("slack", "sms", "sms2", "ops"):
        await deliver(store, channel, T0 + timedelta(hours=1), kind="failed")
    view = await store.notification(accepted.id)
    assert view is not None
    assert view.status == "failed"


async def test_ack_code_resolves_among_unacknowledged(store: Store) -> None:
    """The code a step carries (any case, O for 0) finds the notification until it is acknowledged."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    (claimed,) = await store.claim("slack", 10, T0, T0 + LEASE)
    code = claimed.ack_code
    assert code is not None
    assert await store.by_ack_code(code.lower().replace("0", "o")) == accepted.id
    await store.acknowledge(accepted.id, "+15550001111", "sms", T0)
    assert await store.by_ack_code(code) is None


async def test_claim_carries_the_ack_code_while_unacknowledged(store: Store) -> None:
    """A claimed escalation step knows its ack code; a failover plan's delivery has none."""
    await outage(store)
    await store.accept([note(1), note(2, Severity.INFO)], T0)
    claimed = await store.claim("slack", 10, T0, T0 + LEASE)
    codes = {c.notification.id[-1]: c.ack_code for c in claimed}
    assert codes["2"] is None
    assert codes["1"] is not None and len(codes["1"]) == 6


async def test_mode_change_stops_the_escalation_of_a_delivered_notification(store: Store) -> None:
    """Once email is back the outage's remaining steps are dropped, not sent at the next outage."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    await deliver(store, "slack", T0)
    at = T0 + timedelta(minutes=1)
    await store.save_provider(HealthSnapshot(natural=ProviderState.HEALTHY, since=at), None, at)
    view = await store.notification(accepted.id)
    assert view is not None
    assert [d.state.value for d in view.deliveries] == ["delivered", "superseded", "superseded", "superseded"]


async def test_a_claim_says_whether_failing_it_starts_the_next_channel(store: Store) -> None:
    """Claimed.fails_over: a failover list's steps before its last (a full mailbox fails over
    there); never an escalation's (its later steps fall due at their own times) nor a last step."""
    await outage(store)
    failover = Notification("01JEXAMPLE9000000000000000", "key-failover", T0, Severity.HIGH, "failover")
    plans = {mode: Plan(route="list", mode=mode, steps=("email", "slack")) for mode in ("healthy", "outage")}
    await store.accept([note(1), NewNotification(failover, plans)], T0)

    async def fails_over(channel: str, at: datetime) -> dict[str, bool]:
        claimed = await store.claim(channel, 10, at, at + LEASE)
        return {c.notification.id: c.fails_over for c in claimed}

    assert await fails_over("slack", T0) == {"01JEXAMPLE0000000000000001": False}  # the ladder's first
    assert await fails_over("email", T0) == {failover.id: True}
    assert await fails_over("sms", T0 + timedelta(minutes=5)) == {"01JEXAMPLE0000000000000001": False}
