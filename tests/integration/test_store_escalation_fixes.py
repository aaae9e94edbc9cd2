"""Review findings on escalation in the outbox, on both backends (SQLite, PostgreSQL).

Part of the shared store suite (the ``store`` fixture runs each test on both): a step delivered
after the mode changed, a failed callback or a retry after the acknowledgement, and ack codes that
are random, for escalations only, and resolve only open escalations.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row
from psycopg.types.string import TextLoader

from daemon.core.health import HealthSnapshot
from daemon.core.model import ACK_CODE_ALPHABET, ACK_CODE_LENGTH, SUPERSEDES_LABEL, ProviderState, Severity
from daemon.store import codec, postgres_accept_tx, postgres_provider
from daemon.store.base import Store
from daemon.store.postgres_queries import Q
from daemon.store.values import Callback, Outcome
from tests.integration.conftest import PgFactory
from tests.integration.test_escalation_store import LEASE, T0, deliver, note, outage
from tests.integration.test_group_versions_store import FIRING, partly_resolved, resolved, version


async def healthy(store: Store, at: datetime) -> None:
    await store.save_provider(HealthSnapshot(natural=ProviderState.HEALTHY, since=at), None, at)


async def states(store: Store, notification_id: str) -> tuple[str, list[str]]:
    view = await store.notification(notification_id)
    assert view is not None
    return view.status, [d.state.value for d in view.deliveries]


async def test_a_step_delivered_after_the_mode_changed_stops_the_later_steps(store: Store) -> None:
    """Step 0 in flight across a mode change: once it delivers, the old mode's later steps stop."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    (claimed,) = await store.claim("slack", 10, T0, T0 + LEASE)
    at = T0 + timedelta(seconds=10)
    await healthy(store, at)
    await store.record([Outcome(claimed.delivery.id, "delivered", at, at, "ok")], at)
    assert await states(store, accepted.id) == (
        "delivered",
        ["delivered", "superseded", "superseded", "superseded"],
    )
    await outage(store, T0 + timedelta(hours=1))
    assert await deliver(store, "sms", T0 + timedelta(hours=1)) == []


async def _across_recovery(store: Store) -> tuple[str, int, datetime]:
    """Step 0 claimed (waiting for its send slot) while step 1 delivers and email comes back."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    (slack,) = await store.claim("slack", 10, T0, T0 + timedelta(hours=1))
    at = T0 + timedelta(minutes=5)
    assert await deliver(store, "sms", at) == [accepted.id]
    await healthy(store, at)
    return accepted.id, slack.delivery.id, at


async def test_a_step_back_unsent_after_the_mode_changed_is_not_left_for_the_next_outage(
    store: Store,
) -> None:
    """A claim that comes back unsent after the recovery (its send slot came after the mode changed,
    or a 429) of an escalation another step reached stops with the old mode's other steps: left
    pending, it would wait for the next outage and page about this one then (found by an outage-day
    review: 30 such Slack steps stayed pending after the recovery)."""
    notification_id, slack, at = await _across_recovery(store)
    await store.record([Outcome(slack, "retry", at, at, "mode changed", retry_at=at)], at)
    assert await states(store, notification_id) == (
        "delivered",
        ["superseded", "delivered", "superseded", "superseded"],
    )
    await outage(store, T0 + timedelta(hours=2))
    assert await deliver(store, "slack", T0 + timedelta(hours=2)) == []


async def test_a_claim_released_after_the_mode_changed_is_not_left_for_the_next_outage(
    store: Store,
) -> None:
    """The same claim released at a start-up (killed just after the recovery) stops as well."""
    notification_id, _, at = await _across_recovery(store)
    await store.release_claims(at)
    assert (await states(store, notification_id))[1][0] == "superseded"
    await outage(store, T0 + timedelta(hours=2))
    assert await deliver(store, "slack", T0 + timedelta(hours=2)) == []


async def test_a_failed_callback_after_the_acknowledgement_reopens_nothing(store: Store) -> None:
    """An acknowledged escalation whose sent step later bounces stays closed: no re-send at a mode change."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    (claimed,) = await store.claim("slack", 10, T0, T0 + LEASE)
    await store.record([Outcome(claimed.delivery.id, "delivered", T0, T0, "ok", remote_id="R1")], T0)
    assert await store.acknowledge(accepted.id, "alice", "slack", T0) == "acknowledged"
    assert await store.record_callback(Callback("slack", "R1", False, "undelivered", T0))
    status, _ = await states(store, accepted.id)
    assert status != "pending"
    await healthy(store, T0 + timedelta(minutes=1))
    assert await store.reroute_candidates("healthy", 10) == []


async def test_a_failed_callback_after_another_step_delivered_reopens_nothing(store: Store) -> None:
    """A sent step that later bounces leaves delivered an escalation another step reached: no
    re-plan (to email, or its first step again) at a mode change."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    (claimed,) = await store.claim("slack", 10, T0, T0 + LEASE)
    await store.record([Outcome(claimed.delivery.id, "delivered", T0, T0, "ok")], T0)
    at = T0 + timedelta(minutes=5)
    (texted,) = await store.claim("sms", 10, at, at + LEASE)
    await store.record([Outcome(texted.delivery.id, "delivered", at, at, "ok", remote_id="SM1")], at)
    assert await store.record_callback(Callback("sms", "SM1", False, "undelivered", at))
    assert (await states(store, accepted.id))[0] == "delivered"
    await healthy(store, at + timedelta(minutes=1))
    assert await store.reroute_candidates("healthy", 10) == []


async def test_a_retry_after_the_acknowledgement_is_not_sent_again(store: Store) -> None:
    """A send in flight when acknowledged that comes back as a retry is superseded, never re-claimed."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    (claimed,) = await store.claim("slack", 10, T0, T0 + LEASE)
    assert await store.acknowledge(accepted.id, "alice", "api", T0) == "acknowledged"
    retry_at = T0 + timedelta(seconds=30)
    await store.record([Outcome(claimed.delivery.id, "retry", T0, T0, "429", retry_at=retry_at)], T0)
    assert (await states(store, accepted.id))[1][0] == "superseded"
    assert "slack" not in await store.due()
    assert await deliver(store, "slack", T0 + timedelta(hours=1)) == []


async def test_a_claim_released_after_the_acknowledgement_is_not_sent_again(store: Store) -> None:
    """Claims released at start-up whose notification was acknowledged meanwhile are superseded."""
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    await store.claim("slack", 10, T0, T0 + LEASE)
    assert await store.acknowledge(accepted.id, "alice", "api", T0) == "acknowledged"
    await store.release_claims(T0 + timedelta(hours=1))
    assert (await states(store, accepted.id))[1][0] == "superseded"
    assert await deliver(store, "slack", T0 + timedelta(hours=1)) == []


async def test_ack_codes_are_random_and_only_for_escalations(store: Store) -> None:
    """An escalation's code: six unambiguous characters, not the id's end; other notifications have none."""
    await outage(store)
    accepted = await store.accept([note(n) for n in range(1, 9)] + [note(9, Severity.INFO)], T0)
    claimed = await store.claim("slack", 20, T0, T0 + LEASE)
    codes = {c.notification.id: c.ack_code for c in claimed}
    assert codes[accepted[-1].id] is None
    escalating = [codes[a.id] for a in accepted[:-1]]
    assert all(c is not None and len(c) == ACK_CODE_LENGTH for c in escalating)
    assert all(set(c or "") <= set(ACK_CODE_ALPHABET) for c in escalating)
    assert len(set(escalating)) == len(escalating)
    assert all(c != a.id[-ACK_CODE_LENGTH:].upper() for c, a in zip(escalating, accepted, strict=False))


async def test_an_ack_code_never_matches_a_notification_that_does_not_escalate(store: Store) -> None:
    """The id's end of an ordinary pending notification acknowledges nothing by SMS."""
    (accepted,) = await store.accept([note(1, Severity.INFO)], T0)
    assert await store.by_ack_code(accepted.id[-ACK_CODE_LENGTH:]) is None
    assert await store.by_ack_code("000001") is None


async def test_an_ack_code_resolves_only_open_escalations(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Acknowledged or cancelled, an escalation's code finds nothing; open, any case and O for 0 does."""
    draws = iter(["A0B1C0", "D0E1F0", "G0H1J0"])
    monkeypatch.setattr(codec, "random_ack_code", lambda: next(draws))
    await outage(store)
    first, second, third = await store.accept([note(1), note(2), note(3)], T0)
    assert await store.by_ack_code("aob1co") == first.id
    assert await store.by_ack_code("dOelfo") == second.id
    await store.acknowledge(first.id, "alice", "api", T0)
    assert await store.by_ack_code("A0B1C0") is None
    assert await store.cancel(third.id, T0) == "cancelled"
    assert await store.by_ack_code("G0H1J0") is None
    assert await store.by_ack_code("D0E1F0") == second.id


async def test_an_ack_code_clash_among_open_escalations_draws_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drawn code already held by an open escalation is drawn again; an acknowledged one's is free."""
    draws = iter(["AAAAAA", "AAAAAA", "BBBBBB", "AAAAAA"])
    monkeypatch.setattr(codec, "random_ack_code", lambda: next(draws))
    await outage(store)
    first, second = await store.accept([note(1), note(2)], T0)
    assert await store.by_ack_code("AAAAAA") == first.id
    assert await store.by_ack_code("BBBBBB") == second.id
    await store.acknowledge(first.id, "alice", "api", T0)
    (third,) = await store.accept([note(3)], T0)
    assert await store.by_ack_code("AAAAAA") == third.id


async def test_a_notification_replanned_into_an_escalation_gets_a_code(store: Store) -> None:
    """Accepted while healthy (email, no code), re-planned to the outage's escalation: now it has one."""
    item = note(1)
    (accepted,) = await store.accept([item], T0)
    await outage(store)
    assert await store.reroute("outage", {accepted.id: item.plans["outage"]}, T0) == 1
    (claimed,) = await store.claim("slack", 10, T0, T0 + LEASE)
    assert claimed.ack_code is not None
    assert await store.by_ack_code(claimed.ack_code) == accepted.id


async def test_only_the_api_acknowledges_a_notification_that_does_not_escalate(store: Store) -> None:
    """Slack or SMS never stop an ordinary notification; an admin through the API may."""
    (accepted,) = await store.accept([note(1, Severity.INFO)], T0)
    assert await store.acknowledge(accepted.id, "+15550001111", "sms", T0) == "not_found"
    assert await store.acknowledge(accepted.id, "U123", "slack", T0) == "not_found"
    assert await store.acknowledge(accepted.id, "token admin", "api", T0) == "acknowledged"


async def test_a_mode_change_waits_for_a_reroute_holding_the_mode_instead_of_deadlocking(
    pg_nodes: PgFactory, postgres_url: str
) -> None:
    """save_provider locks the provider row before any delivery: a reroute holding the mode runs on."""
    store = await pg_nodes()
    await outage(store)
    (accepted,) = await store.accept([note(1)], T0)
    await deliver(store, "slack", T0)  # delivered: its later outage steps are what a mode change stops
    rerouter, writer = [await _connect(postgres_url) for _ in range(2)]
    async with rerouter, writer:
        async with rerouter.transaction():
            await rerouter.execute(Q["current_mode_shared"])
            mode_change = asyncio.create_task(_save_healthy(writer, T0 + timedelta(minutes=1)))
            await _until_waiting(rerouter, writer.info.backend_pid)
            await rerouter.execute(Q["lock_deliveries_of"], (accepted.id,))
        await asyncio.wait_for(mode_change, timeout=30)
    assert (await states(store, accepted.id))[1] == ["delivered", "superseded", "superseded", "superseded"]


async def _connect(url: str) -> psycopg.AsyncConnection[DictRow]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)


async def _save_healthy(conn: psycopg.AsyncConnection[DictRow], at: datetime) -> None:
    async with conn.transaction():
        snapshot = HealthSnapshot(natural=ProviderState.HEALTHY, since=at)
        await postgres_provider.save_provider(conn, snapshot, None, at)


async def _until_waiting(observer: psycopg.AsyncConnection[DictRow], pid: int) -> None:
    """Poll until the backend ``pid`` waits on a lock (deadline 20 s)."""
    deadline = time.monotonic() + 20
    query = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
    while time.monotonic() < deadline:
        row = await (await observer.execute(query, (pid,))).fetchone()
        if row is not None and row["wait_event_type"] == "Lock":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited on a lock")


async def test_acknowledging_a_closed_group_version_waits_for_the_group_instead_of_deadlocking(
    pg_nodes: PgFactory, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A version a newer one closed is acknowledged while the group's resolution, which resolves
    that very version, is being committed: the acknowledgement takes the group's lock before the
    version's row, as the accept does, so one waits for the other (it deadlocked the other way)."""
    store = await pg_nodes()
    await outage(store)
    (first,) = await store.accept([version(FIRING)], T0)
    await store.accept([version(partly_resolved(FIRING))], T0 + timedelta(minutes=1))
    done = version(resolved(FIRING))
    at = T0 + timedelta(minutes=2)
    committer = await _connect(postgres_url)
    committer.adapters.register_loader("jsonb", TextLoader)  # as the store's connections read it
    async with committer:
        async with committer.transaction():
            await committer.execute(Q["lock_group"], (done.notification.labels[SUPERSEDES_LABEL],))
            ack = asyncio.create_task(store.acknowledge(first.id, "alice", "slack", at))
            await _until_someone_waits(committer)
            await committer.execute("SET LOCAL deadlock_timeout = '100ms'")
            await postgres_accept_tx.accept(committer, [([done], at)], "node-b")  # DeadlockDetected before
        assert await asyncio.wait_for(ack, timeout=30) == "already"  # the resolution closed it
    assert not [r for r in caplog.records if "deadlock" in r.getMessage().lower()]


async def _until_someone_waits(observer: psycopg.AsyncConnection[DictRow]) -> None:
    """Poll until another backend waits on a lock (deadline 20 s)."""
    deadline = time.monotonic() + 20
    query = (
        "SELECT count(*) AS n FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    while time.monotonic() < deadline:
        row = await (await observer.execute(query)).fetchone()
        if row is not None and row["n"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no backend ever waited on a lock")
