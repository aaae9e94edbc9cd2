"""A digest cut short by a crash is sent again as the same digest, under the same id.

The digest's id (its idempotency key) is noted on its deliveries as it goes out; after a restart
they are claimed again and sent as that group first, whatever else waits, where they used to be
grouped anew (the first critical alone again, the rest under another id): a repeat the receiver
could not drop. Found by a review; failed on the code before.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from channels.digests import DIGEST_LABEL
from channels.fake import FakeChannel
from daemon.clock import SystemClock
from daemon.core.backoff import RetryPolicy
from daemon.core.model import ProviderState
from daemon.core.routing import Matcher, Route
from daemon.digesting import DigestPolicy
from daemon.dispatch_policy import ChannelPolicy
from daemon.dispatcher import Dispatcher
from daemon.intake.accept import Acceptor
from daemon.store.sqlite import SqliteStore
from tests.support import OutboxWorld, dispatcher_for, monitor_for, until

ROUTES = (Route("all", Matcher(), ("email",), ("backup",)),)
FAST = RetryPolicy(initial_s=0.05, max_s=0.2, multiplier=2, max_attempts=3)
#: 10 sends a second and a 0.5 s target: a backlog of more than 5 is a burst
DIGEST = DigestPolicy(pace_per_s=10, drain_target_s=0.5)


class World(OutboxWorld):
    def __init__(self, store: SqliteStore, acceptor: Acceptor, dispatcher: Dispatcher) -> None:
        self.store, self.acceptor, self.dispatcher = store, acceptor, dispatcher
        self.task = asyncio.create_task(dispatcher.run())


async def life(path: Path, backup: FakeChannel) -> World:
    """The daemon's outbox, monitor and dispatcher on ``path``, in outage, dispatching."""
    clock = SystemClock()
    store = SqliteStore(path)
    await store.open()
    monitor = monitor_for(store, clock)
    channels = {"email": FakeChannel("email"), "backup": backup}
    policies = {
        "email": ChannelPolicy(retry=FAST, primary=True),
        "backup": ChannelPolicy(retry=FAST, digest=DIGEST),
    }
    dispatcher = dispatcher_for(store, monitor, channels, policies, ROUTES, clock)
    monitor.on_mode_change(lambda _: dispatcher.request_sweep())
    await monitor.force(ProviderState.OUTAGE, "test")
    return World(store, Acceptor(store, lambda: ROUTES, clock, dispatcher.wake), dispatcher)


async def test_a_digest_cut_short_by_a_crash_is_sent_again_under_its_id(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    first = FakeChannel("backup", gate=asyncio.Event())
    before = await life(path, first)
    await before.submit(1)
    await until(lambda: first.in_flight == 1)
    burst = await before.submit(20)
    # The first send goes, then the burst's first critical alone, then its digest of the other
    # nineteen, held on the wire: the process dies before its outcome is recorded.
    for sent in (1, 2):
        held, first.gate = first.gate, asyncio.Event()
        held.set()
        await until(lambda sent=sent: first.in_flight == 1 and len(first.attempts) > sent)
    cut_short = first.attempts[2]
    assert DIGEST_LABEL in cut_short.labels
    before.task.cancel()  # as kill -9: no drain, the claims stay in flight
    await asyncio.gather(before.task, return_exceptions=True)

    again = FakeChannel("backup")
    after = await life(path, again)  # its start releases the dead process's claims
    try:
        await until(lambda: after.all_delivered(burst[1:]))
    finally:
        after.dispatcher.stop()
        await after.task
        await after.store.close()
    assert [m.idempotency_key for m in again.sent] == [cut_short.idempotency_key]
    assert again.sent[0].labels[DIGEST_LABEL] == cut_short.labels[DIGEST_LABEL]
