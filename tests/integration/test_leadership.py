"""Leadership on the real PostgreSQL: one leader, lease takeover, fencing, votes from every node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from daemon.clock import SystemClock
from daemon.core.assessment import CheckPolicy, Policy, Role
from daemon.core.health import HealthSnapshot, Thresholds
from daemon.core.model import CheckResult, CheckStatus, ProviderState
from daemon.leadership import Leadership, Vantage
from daemon.monitor import ProviderMonitor
from daemon.store.base import NotLeader, StoreUnavailable
from daemon.store.postgres import IDLE_IN_TRANSACTION_FLOOR_S, PostgresStore
from daemon.store.postgres_provider import Fence, save_provider_fenced
from daemon.store.postgres_queries import Conn
from tests.integration.conftest import PgFactory
from tests.stand_ins.tcp_proxy import in_front_of_postgres

pytestmark = pytest.mark.usefixtures("postgres_server")


async def until(predicate: Callable[[], Awaitable[bool]], deadline_s: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def result(check: str, status: CheckStatus, reason: str = "") -> CheckResult:
    return CheckResult(check, status, reason or status.value, 0.01, datetime.now(UTC))


def node_of(
    store: PostgresStore, lease_s: float = 1.0, quorum: int = 1, policy: Policy | None = None
) -> Leadership:
    monitor = ProviderMonitor(store, Thresholds(failure=1, success=1), SystemClock(), policy)
    return Leadership(store, monitor, SystemClock(), lease_s=lease_s, quorum=quorum)


async def test_one_leader_at_a_time(pg_nodes: PgFactory) -> None:
    """Nodes trying at once: exactly one gets the lease, the others get nothing."""
    stores = [await pg_nodes(f"n{i}") for i in range(3)]
    got = await asyncio.gather(*(s.acquire_leadership(5.0, None) for s in stores))
    assert sum(v is not None for v in got) == 1
    again = await asyncio.gather(*(s.acquire_leadership(5.0, v) for s, v in zip(stores, got, strict=True)))
    assert again == got, "the holder renews with the same version; the others still get nothing"
    lead = await stores[0].leader()
    assert lead.held and lead.node == stores[got.index(next(v for v in got if v))].node


async def test_expired_lease_is_taken_over_with_a_new_version(pg_nodes: PgFactory) -> None:
    """After the lease runs out another node takes it, the version moves on, the old one cannot renew."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    first = await a.acquire_leadership(0.5, None)
    assert first is not None
    assert await b.acquire_leadership(0.5, None) is None
    taken: list[int] = []

    async def b_takes() -> bool:
        version = await b.acquire_leadership(5.0, None)
        taken.extend([] if version is None else [version])
        return version is not None

    await until(b_takes)
    assert taken[0] > first
    assert await a.acquire_leadership(0.5, first) is None


async def test_deposed_leader_write_updates_nothing(pg_nodes: PgFactory) -> None:
    """A leader whose lease was taken over writes nothing: NotLeader, provider row and events unchanged."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    version = await a.acquire_leadership(0.3, None)
    a.fence(version)
    now = datetime.now(UTC)
    await a.save_provider(HealthSnapshot(), None, now)  # the current leader's write goes through
    await until(lambda: _acquired(b))
    outage = HealthSnapshot(natural=ProviderState.OUTAGE, since=now)
    with pytest.raises(NotLeader):
        await a.save_provider(outage, None, now)
    view = await b.provider()
    assert view.state == ProviderState.HEALTHY and view.events == ()


async def test_leader_paused_mid_write_does_not_block_takeover(pg_nodes: PgFactory) -> None:
    """A leader paused mid-write: takeover attempts give up quickly, then succeed once its session ends."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    stale = await a.acquire_leadership(0.5, None)
    assert stale is not None
    locked, resume = asyncio.Event(), asyncio.Event()
    outage = HealthSnapshot(natural=ProviderState.OUTAGE, since=datetime.now(UTC))

    async def write_then_pause(conn: Conn) -> None:  # as if SIGSTOP hit between statements
        await save_provider_fenced(conn, outage, None, datetime.now(UTC), Fence(a.node, stale))
        locked.set()  # the write holds the lease row FOR SHARE until its transaction ends
        await resume.wait()

    paused = asyncio.create_task(a._transaction(write_then_pause))
    try:
        await asyncio.wait_for(locked.wait(), 10)
        await until(lambda: _lease_ran_out(b))
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="lock timeout"):
            await b.acquire_leadership(1.0, None)
        # gave up after its lock_timeout (a third of the lease), long before the idle session ends
        assert time.monotonic() - started < IDLE_IN_TRANSACTION_FLOOR_S / 2
        await until(lambda: _took_over(b), deadline_s=30)
    finally:
        resume.set()
        (resumed,) = await asyncio.gather(paused, return_exceptions=True)
    assert isinstance(resumed, StoreUnavailable), "the server ended the paused session: no commit"
    lead = await b.leader()
    assert lead.node == b.node and lead.version > stale
    assert (await b.provider()).state == ProviderState.HEALTHY, "the paused write was never committed"


async def _lease_ran_out(store: PostgresStore) -> bool:
    return not (await store.leader()).held


async def _took_over(store: PostgresStore) -> bool:
    with contextlib.suppress(StoreUnavailable):  # the lease row is still locked: try again
        return await store.acquire_leadership(1.0, None) is not None
    return False


async def test_follower_cannot_write_provider_state(pg_nodes: PgFactory) -> None:
    """Once leadership is on, a node without the lease has its provider writes refused."""
    a = await pg_nodes("a")
    a.fence(None)
    with pytest.raises(NotLeader):
        await a.save_provider(HealthSnapshot(), None, datetime.now(UTC))


async def test_fenced_monitor_steps_down_and_follows(
    pg_nodes: PgFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A paused leader's next decision is fenced off: it logs so, steps down, adopts the stored state."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    leader, other = node_of(a, lease_s=0.4), node_of(b, lease_s=0.4)
    await leader.tick()
    await other.tick()
    assert leader.is_leader and not other.is_leader
    stale = leader.version
    await until(lambda: _ticked(other))  # a stops renewing (as if paused); b takes over
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="daemon.leadership"):
        await leader.monitor.check_result(result("smtp", CheckStatus.DOWN))
    assert not leader.is_leader and not leader.monitor.leading
    assert _events(caplog) == [
        ("leader.fenced", a.node, stale, "provider"),
        ("leader.deposed", a.node, stale, None),
    ]
    assert (await b.provider()).state == ProviderState.HEALTHY
    await other.monitor.check_result(result("smtp", CheckStatus.DOWN))
    assert (await b.provider()).state == ProviderState.OUTAGE
    await leader.tick()
    assert leader.monitor.state == ProviderState.OUTAGE, "the follower adopts the leader's state"


async def test_stop_hands_over_at_once(pg_nodes: PgFactory) -> None:
    """A leader stopping cleanly resigns: another node leads without waiting for the lease."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    leader, other = node_of(a, lease_s=60), node_of(b, lease_s=60)
    await leader.start()
    assert leader.is_leader
    await leader.stop()
    await other.tick()
    assert other.is_leader


#: smtp triggers; "control" is a target outside the provider (its DOWN blames our network)
SPLIT = Policy({"smtp": CheckPolicy(), "control": CheckPolicy(Role.CONTROL)})


def vantage(store: PostgresStore, quorum: int, fresh_s: float = 60) -> Vantage:
    return Vantage(store, quorum, fresh_s, lambda: SPLIT)


async def test_split_views_need_the_quorum(pg_nodes: PgFactory) -> None:
    """With quorum 2 of 3: one node seeing it down (control down too) is no outage; two voting are."""
    a, b, c = await pg_nodes("a"), await pg_nodes("b"), await pg_nodes("c")
    await c.record_check(result("smtp", CheckStatus.DOWN))
    await c.record_check(result("control", CheckStatus.DOWN))
    await b.record_check(result("smtp", CheckStatus.OK))
    await b.record_check(result("control", CheckStatus.OK))
    assert (await vantage(a, 2).merge(result("smtp", CheckStatus.OK))).status == CheckStatus.OK
    assert (await vantage(a, 2).merge(result("control", CheckStatus.OK))).status == CheckStatus.OK
    await c.record_check(result("control", CheckStatus.OK))  # c's own network works again
    await b.record_check(result("smtp", CheckStatus.DOWN))
    merged = await vantage(a, 2).merge(result("smtp", CheckStatus.OK))
    assert merged.status == CheckStatus.DOWN and "2 of 3 nodes" in merged.reason
    alone = await vantage(a, 3).merge(result("smtp", CheckStatus.OK))
    assert alone.status == CheckStatus.OK


async def test_node_whose_own_network_fails_does_not_make_the_quorum(pg_nodes: PgFactory) -> None:
    """A: provider and control down, B: provider down (control up), C fine, quorum 2: no outage."""
    a, b, c = await pg_nodes("a"), await pg_nodes("b"), await pg_nodes("c")
    seen: dict[PostgresStore, list[CheckResult]] = {}
    for store, smtp, control in [(a, "down", "down"), (b, "down", "ok"), (c, "ok", "ok")]:
        seen[store] = [result("control", CheckStatus(control)), result("smtp", CheckStatus(smtp))]
        for each in seen[store]:
            await store.record_check(each)
    for leader, mine in seen.items():  # whoever leads, merging its own latest results
        for own in mine:
            merged = await vantage(leader, 2).merge(own)
            assert merged.status != CheckStatus.DOWN, (leader.node, merged)
    told = await vantage(c, 2).merge(result("smtp", CheckStatus.OK))
    assert f"{a.node} too, but with its controls down (its own network): not counted" in told.reason
    await c.record_check(result("smtp", CheckStatus.DOWN))
    declared = await vantage(a, 2).merge(result("smtp", CheckStatus.DOWN))
    assert declared.status == CheckStatus.DOWN, "B and C see it down with their controls up"
    assert "2 of 3 nodes see it down with their controls up (quorum 2)" in declared.reason


async def test_own_down_below_quorum_counts_as_up(pg_nodes: PgFactory) -> None:
    """The leader alone seeing it down, others up: the merged round is up, saying why."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    await b.record_check(result("smtp", CheckStatus.OK))
    merged = await vantage(a, 2).merge(result("smtp", CheckStatus.DOWN))
    assert merged.status == CheckStatus.OK and "1 of 2 nodes" in merged.reason
    lonely = await vantage(b, 2, fresh_s=0.001).merge(result("smtp", CheckStatus.DOWN))
    assert lonely.status == CheckStatus.UNKNOWN


async def test_nodes_view_shows_roles_and_latest_checks(pg_nodes: PgFactory) -> None:
    """Status lists each node with its role and its latest result per check."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    assert await a.acquire_leadership(5.0, None) is not None
    await a.record_check(result("smtp", CheckStatus.DOWN))
    await a.record_check(result("smtp", CheckStatus.OK))
    await b.record_check(result("smtp", CheckStatus.DOWN))
    nodes = {n.node: n for n in await a.nodes(datetime(2000, 1, 1, tzinfo=UTC))}
    assert nodes[a.node].role == "leader" and nodes[b.node].role == "follower"
    assert [c.status for c in nodes[a.node].checks] == [CheckStatus.OK]
    assert [c.status for c in nodes[b.node].checks] == [CheckStatus.DOWN]


async def _acquired(store: PostgresStore) -> bool:
    version = await store.acquire_leadership(5.0, None)
    if version is not None:
        store.fence(version)
    return version is not None


async def _ticked(leadership: Leadership) -> bool:
    await leadership.tick()
    return leadership.is_leader


async def test_leader_declares_outage_only_when_the_quorum_of_nodes_agrees(pg_nodes: PgFactory) -> None:
    """Quorum 2 of 3: the leader's monitor stays healthy on one node's word, goes to outage on two."""
    a, b, c = await pg_nodes("a"), await pg_nodes("b"), await pg_nodes("c")
    leader = node_of(a, lease_s=10, quorum=2)
    await leader.tick()
    await c.record_check(result("smtp", CheckStatus.DOWN))
    await leader.monitor.check_result(result("smtp", CheckStatus.OK))
    assert (await a.provider()).state == ProviderState.HEALTHY
    await b.record_check(result("smtp", CheckStatus.DOWN))
    await leader.monitor.check_result(result("smtp", CheckStatus.OK))
    assert leader.monitor.state == ProviderState.OUTAGE
    assert (await c.provider()).state == ProviderState.OUTAGE, "the decision is stored for the followers"


async def test_resumed_leader_renewal_is_fenced_and_logged(
    pg_nodes: PgFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A leader resuming after its lease was taken: its renewal with the stale token updates nothing."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    leader, other = node_of(a, lease_s=0.4), node_of(b, lease_s=0.4)
    await leader.tick()
    stale = leader.version
    await until(lambda: _ticked(other))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="daemon.leadership"):
        await leader.tick()
    assert _events(caplog) == [
        ("leader.fenced", a.node, stale, "lease"),
        ("leader.deposed", a.node, stale, None),
    ]
    lead = await a.leader()
    assert (lead.node, lead.version) == (b.node, other.version), "the stale renewal changed nothing"


async def test_follower_explain_shows_the_leaders_decision_and_every_nodes_checks(
    pg_nodes: PgFactory,
) -> None:
    """A follower explains the leader's stored decision, the checks as merged, and each node's view."""
    a, b, c, d = [await pg_nodes(name) for name in "abcd"]
    leader, follower = node_of(a, 10, 2, SPLIT), node_of(b, 10, 2, SPLIT)
    await leader.tick()
    await follower.tick()
    assert follower.monitor.explain().checks[0].latest is None, "nothing reported yet"
    await c.record_check(result("smtp", CheckStatus.DOWN, "refused at c"))
    await c.record_check(result("control", CheckStatus.DOWN))
    for voter in (b, d):
        await voter.record_check(result("control", CheckStatus.OK))
        await voter.record_check(result("smtp", CheckStatus.DOWN, f"refused at {voter.node}"))
    await leader.monitor.check_result(result("control", CheckStatus.OK))
    await leader.monitor.check_result(result("smtp", CheckStatus.OK))
    await follower.tick()
    told = follower.monitor.explain()
    assert told.state == ProviderState.OUTAGE
    seen = {view.name: view.latest for view in told.checks}
    assert seen["smtp"] is not None and seen["smtp"].status == CheckStatus.DOWN
    assert "2 of 4 nodes see it down with their controls up (quorum 2)" in seen["smtp"].reason
    assert f"{c.node} too, but with its controls down (its own network): not counted" in seen["smtp"].reason
    assert seen["control"] is not None and seen["control"].status == CheckStatus.OK
    why = "\n".join(told.why)
    assert f"this node ({b.node}) follows: {a.node} leads" in why
    assert "the leader's last transition" in why and "-> outage" in why
    assert f"node {a.node} (leader) sees the provider working" in why
    assert f"node {b.node} (follower, this node) sees the provider down" in why
    assert f"node {c.node} (follower) sees the provider unknown" in why and "it does not vote" in why


def _events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, int, str | None]]:
    """The leadership's structured events: (event, node, lease version, refused write)."""
    return [
        (r.event, r.node, r.version, getattr(r, "write", None))  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "event", "").startswith("leader.")
    ]


async def test_new_leader_counts_the_stored_checks_as_merged_not_raw(pg_nodes: PgFactory) -> None:
    """An outage declared on two nodes' votes; a third node's own network then fails (its checks
    and controls down). The node elected next starts from the checks as the leader counts them:
    the third node's raw control DOWN beside a provider DOWN would read as our network failing,
    so its first round went outage -> unknown and the next back to outage, announced twice."""
    a, b, c, d = [await pg_nodes(name) for name in "abcd"]
    first = node_of(a, lease_s=0.4, quorum=2, policy=SPLIT)
    await first.tick()
    for voter in (b, d):
        await voter.record_check(result("control", CheckStatus.OK))
        await voter.record_check(result("smtp", CheckStatus.DOWN))
    await first.monitor.check_result(result("control", CheckStatus.OK))
    await first.monitor.check_result(result("smtp", CheckStatus.DOWN))
    assert first.monitor.state == ProviderState.OUTAGE
    await c.record_check(result("smtp", CheckStatus.DOWN))
    await c.record_check(result("control", CheckStatus.DOWN))
    successor = node_of(b, lease_s=0.4, quorum=2, policy=SPLIT)
    await until(lambda: _ticked(successor))  # a stopped renewing: b takes over
    await successor.monitor.check_result(result("smtp", CheckStatus.DOWN))
    await successor.monitor.check_result(result("control", CheckStatus.OK))
    events = (await b.provider(events=10, checks=0)).events
    assert [e.to_state for e in events] == [ProviderState.OUTAGE]


async def test_election_whose_state_read_failed_is_finished_on_the_next_round(
    pg_nodes: PgFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease taken, the stored state's read fails (the store went away just then): the node does
    not decide on a state it never adopted, and its next round adopts it and runs the lead listeners
    (the announcer's resume, the catch-up, an owed re-plan). They never ran for that term before."""
    a = await pg_nodes("a")
    leader = node_of(a, lease_s=10)
    elected: list[None] = []
    leader.monitor.on_lead(lambda: elected.append(None))
    read = a.provider

    async def cut_off(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(a, "provider", read)
        raise StoreUnavailable("the store could not commit: connection lost")

    monkeypatch.setattr(a, "provider", cut_off)
    await leader.tick()
    assert leader.version is not None, "the lease is this node's"
    assert not leader.monitor.leading, "it decides nothing before it adopted the stored state"
    assert elected == []
    await leader.tick()
    assert leader.monitor.leading
    assert elected == [None], "the lead listeners run once the stored state is adopted"


async def test_leader_cut_off_from_the_store_no_longer_says_it_leads(postgres_url: str) -> None:
    """The leader's store unreachable past its lease: it steps down, and its explain (what
    `backchannel status` shows on it) says so. It went on saying 'this node leads (lease version
    1)' while another node led, since the view of the nodes could not be read to replace it."""
    proxy, url = await in_front_of_postgres(postgres_url)
    store = PostgresStore(url, node="cut-off", connect_timeout_s=1, reconnect_s=0.2)
    await store.open()
    try:
        leader = node_of(store, lease_s=1.0)
        await leader.tick()
        assert leader.is_leader
        assert any(
            "this node (cut-off) leads (lease version 1)" in line for line in leader.monitor.explain().why
        )
        await proxy.down()
        await until(lambda: _stepped_down(leader))
        why = leader.monitor.explain().why
        assert not [line for line in why if "leads (lease version" in line], why
        assert (
            "this node (cut-off) follows: it stepped down (the lease ran out while the store did not answer)"
            in why
        )
    finally:
        await store.close()
        with contextlib.suppress(AssertionError):
            await proxy.down()


async def _stepped_down(leadership: Leadership) -> bool:
    await leadership.tick()
    return leadership.version is None
