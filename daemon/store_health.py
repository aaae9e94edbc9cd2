"""Whether the store commits now: what readiness (``/healthz``), the status and a metric say.

While the store cannot commit (a full disk, a read-only or failing one, PostgreSQL unreachable)
every intake answers 503 ``store_unavailable``; a load balancer or a monitoring probe asking
``/healthz`` must hear the same, and without a write per request. :class:`StoreHealth` answers
from the outcomes of this process's own store calls, each proving as much as it did:

- an accept (any intake's: the API, the alert webhooks, the SMTP smart host, an intake worker's)
  proves that the store commits new rows durably, or that it does not (:attr:`Proof.COMMIT`);
  one answered only with duplicates was looked up, not written, and proves a read;
- a pass of the dispatcher proves that the outbox can be read and claimed from, or that it
  cannot (:attr:`Proof.READ`), and no more: a pass over an idle outbox writes nothing new, so
  it goes on succeeding on a full disk on which every accept fails.

A failure holds until a call proving as much succeeds: a failed accept until something commits,
a failed pass until a pass (or a commit). A node that the load balancer has stopped sending
accepts to would then never hear that its store commits again, and a process nothing has
touched for a while (an idle intake worker has no dispatcher) would not hear that it stopped:
so :meth:`StoreHealth.verdict` runs a probe (:meth:`Probed.probe`) when what it knows is stale,
at most one at a time and one per :data:`PROBE_EVERY_S` (:data:`QUIET_S` while nothing failed)
however many ask, each bounded by :data:`PROBE_TIMEOUT_S`: one durable commit of one row's worth
while a commit has failed, else a read. Nothing is written while the store works. The verdict is
asked by ``/healthz`` (both ports), ``/v1/status``, ``/metrics``, the SMTP smart host's MAIL FROM
while a failure holds (:meth:`~daemon.intake.accept.Acceptor.store_failing`) and the daemon's
``STATUS=`` line every few seconds, so a daemon nobody asks still finds its store working again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Protocol

from daemon.clock import Clock, SystemClock
from daemon.store.base import StoreError

log = logging.getLogger(__name__)

#: while the store fails, a probe at most this often (a load balancer asks every few seconds)
PROBE_EVERY_S = 2.0
#: while it works, a read when no store call has been heard of for this long
QUIET_S = 5.0
#: a probe not answered within this long is a failure (PostgreSQL's pool waits for a connection)
PROBE_TIMEOUT_S = 5.0
#: a request for the verdict waits this long for a probe it started, then answers what is known
#: (the probe's outcome answers the next request): load balancers time their checks out in seconds
ANSWER_WITHIN_S = 1.0


class Proof(IntEnum):
    """What a store call's outcome proves, the stronger the larger."""

    #: the store answers: reads, claims (a dispatcher pass, a read probe)
    READ = 1
    #: the store commits new rows durably (an accept, a commit probe)
    COMMIT = 2


class Probed(Protocol):
    async def probe(self, *, commit: bool) -> None:
        """A read round trip, or with ``commit`` a durable commit of one row's worth that keeps
        nothing; StoreUnavailable if the store cannot."""
        ...


@dataclass(frozen=True, slots=True)
class Failing:
    """The store fails: since when, the latest failure's words, what it failed at."""

    since_at: datetime
    reason: str
    proof: Proof
    #: monotonic seconds, for the log line that ends it
    since: float


class StoreHealth:
    def __init__(self, store: Probed, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or SystemClock()
        #: the latest outcome heard of each proof, success or failure (monotonic seconds)
        self._heard_at = {proof: self._clock.monotonic() for proof in Proof}
        self._probed_at = float("-inf")
        self._probe: asyncio.Task[None] | None = None
        self.failing: Failing | None = None

    def heard(self, proof: Proof, failure: BaseException | None) -> None:
        """A store call's outcome: ``failure`` is its StoreUnavailable, None if it worked."""
        now = self._clock.monotonic()
        self._heard_at[proof] = now
        if failure is not None:
            self._failed(proof, failure, now)
        elif self.failing is not None and proof >= self.failing.proof:
            log.warning(
                "the store works again after %.0f s: ready",
                now - self.failing.since,
                extra={"event": "health.store_available", "proof": proof.name.lower()},
            )
            self.failing = None

    def _failed(self, proof: Proof, failure: BaseException, now: float) -> None:
        earlier = self.failing
        if earlier is None:
            log.warning(
                "the store fails: not ready (/healthz 503) until it %s again: %s",
                "commits" if proof is Proof.COMMIT else "can be read",
                failure,
                extra={"event": "health.store_unavailable", "proof": proof.name.lower()},
            )
            self.failing = Failing(self._clock.now(), str(failure), proof, now)
        else:  # the same episode: the latest words, and the stronger proof it now waits for
            self.failing = Failing(earlier.since_at, str(failure), max(proof, earlier.proof), earlier.since)

    async def verdict(self) -> Failing | None:
        """Failing, or None while the store works; probes first when what is known is stale."""
        probe = self._due()
        if probe is not None and (self._probe is None or self._probe.done()):
            self._probed_at = self._clock.monotonic()
            self._probe = asyncio.create_task(self._run(probe), name="store-probe")
        if self._probe is not None and not self._probe.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._probe), ANSWER_WITHIN_S)
        return self.failing

    def _due(self) -> Proof | None:
        """The probe that what is known calls for now, if any."""
        now = self._clock.monotonic()
        if self.failing is not None:
            proof, stale_s = self.failing.proof, PROBE_EVERY_S
            last = max(at for p, at in self._heard_at.items() if p >= proof)
        else:
            proof, stale_s, last = Proof.READ, QUIET_S, max(self._heard_at.values())
        if now - last < stale_s or now - self._probed_at < stale_s:
            return None
        return proof

    async def _run(self, proof: Proof) -> None:
        try:
            await asyncio.wait_for(self._store.probe(commit=proof is Proof.COMMIT), PROBE_TIMEOUT_S)
        except TimeoutError:
            self.heard(proof, TimeoutError(f"the store did not answer within {PROBE_TIMEOUT_S:g} s"))
        except StoreError as exc:
            self.heard(proof, exc)
        except Exception:  # a bug in a probe tells nothing about the store; the next one tries again
            log.exception("store probe failed", extra={"event": "health.probe_bug"})
        else:
            self.heard(proof, None)

    async def close(self) -> None:
        """Cancel a probe in flight (before the store closes under it)."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
