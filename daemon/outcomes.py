"""What one send attempt becomes in the outbox: delivered, retry at a time, or failed.

Kept beside the dispatcher (which decides when to send and records what these return) so the
rules for one attempt's result read in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from channels.base import ChannelError, Receipt
from daemon.core.backoff import RetryPolicy, exhausted, retry_delay
from daemon.store.values import Claimed, Outcome

log = logging.getLogger("daemon.dispatcher")


def delivered(
    name: str, claimed: Claimed, receipt: Receipt, started_at: datetime, now: datetime, *, via: str = ""
) -> Outcome:
    """Delivered; ``via`` names the digest that carried it, if one did."""
    if not via:  # a digest is logged once, not once per notification it carries
        log.info(
            "delivered %s via %s",
            claimed.notification.id,
            name,
            extra={"event": "delivery.sent", "notification_id": claimed.notification.id, "channel": name},
        )
    return Outcome(
        delivery_id=claimed.delivery.id,
        kind="delivered",
        started_at=started_at,
        finished_at=now,
        detail=f"{via}: {receipt.detail}" if via else receipt.detail,
        remote_id=receipt.remote_id,
        claim=claimed.delivery.attempts,
    )


#: how long a server that will take a message later (a full mailbox) is given before the step fails:
#: RFC 5321 §4.5.4.1's "at least 4-5 days" for mail servers
LATER_GIVE_UP = timedelta(days=5)


def kept_for_later(exc: ChannelError, claimed: Claimed, now: datetime) -> bool:
    """A refusal the server will lift (``ChannelError.later``) keeps the step trying, past its
    attempts, until the notification is :data:`LATER_GIVE_UP` old, unless the plan fails over from
    it: a critical alert to a full mailbox goes to its backup channel after the usual attempts, not
    days later. An escalation's step keeps trying (failing it would hurry the next step, which
    falls due at its own time anyway)."""
    return exc.later and not claimed.fails_over and now - claimed.notification.created_at < LATER_GIVE_UP


def not_delivered(
    name: str,
    claimed: Claimed,
    exc: ChannelError,
    started_at: datetime,
    now: datetime,
    *,
    retry: RetryPolicy,
    keep_queued: bool,
    rand: float,
    backoff_attempts: int | None = None,
) -> Outcome:
    """Retry after a backoff (no sooner than Retry-After), or fail this step for good.

    ``backoff_attempts`` sets the backoff for a group sent together (a digest): one retry time for
    all, so the group comes back whole (and under the same digest id).
    """
    attempts = claimed.delivery.attempts
    fields = {"event": "delivery.failed", "notification_id": claimed.notification.id, "channel": name}
    # A provider-wide fault is not this message's fault: keep it queued (the outage machinery
    # reroutes it) rather than exhausting its retries and failing it; so is a server that will
    # take it later (a full mailbox: mail servers keep trying for days, RFC 5321 §4.5.4.1).
    if exc.permanent or (exhausted(retry, attempts) and not keep_queued):
        log.warning("giving up on %s via %s: %s", claimed.notification.id, name, exc.reason, extra=fields)
        return Outcome(
            claimed.delivery.id,
            "failed",
            started_at,
            now,
            detail=exc.reason,
            remote_id=exc.remote_id,
            claim=attempts,
        )
    delay = retry_delay(retry, backoff_attempts or attempts, rand, exc.retry_after_s)
    log.info(
        "retrying %s via %s in %.1fs: %s",
        claimed.notification.id,
        name,
        delay,
        exc.reason,
        extra=fields | {"event": "delivery.retry"},
    )
    return Outcome(
        claimed.delivery.id,
        "retry",
        started_at,
        now,
        detail=exc.reason,
        retry_at=now + timedelta(seconds=delay),
        remote_id=exc.remote_id,  # what it did post, if anything: still threaded into and edited
        claim=attempts,
    )


def not_prepared(
    name: str,
    claimed: Claimed,
    exc: Exception,
    started_at: datetime,
    now: datetime,
    *,
    retry: RetryPolicy,
    rand: float,
) -> Outcome:
    """A bug before the send (rendering, digesting): logged loudly, then retried like a transient
    failure, so a passing cause heals and a lasting one fails the step over to the plan's next."""
    log.error(
        "cannot prepare %s for %s: %r",
        claimed.notification.id,
        name,
        exc,
        exc_info=exc,
        extra={"event": "delivery.bug", "notification_id": claimed.notification.id, "channel": name},
    )
    error = ChannelError(f"internal error: {exc!r}")
    return not_delivered(name, claimed, error, started_at, now, retry=retry, keep_queued=False, rand=rand)


def delivered_in_digest(
    name: str,
    digest_id: str,
    carried: Sequence[Claimed],
    receipt: Receipt,
    started_at: datetime,
    now: datetime,
) -> list[Outcome]:
    """Every delivery a digest carried is delivered, its detail naming the digest."""
    log.info(
        "delivered digest %s of %d via %s",
        digest_id,
        len(carried),
        name,
        extra={"event": "digest.sent", "digest_id": digest_id, "channel": name, "count": len(carried)},
    )
    via = f"in digest {digest_id} of {len(carried)}"
    return [delivered(name, c, receipt, started_at, now, via=via) for c in carried]


def released(claimed: Sequence[Claimed], now: datetime) -> list[Outcome]:
    """Claimed but never sent (waiting for a send slot at shutdown): back to the outbox, due now."""
    return _unsent(claimed, now, "not sent before shutdown: back to the outbox")


def replanned(claimed: Sequence[Claimed], now: datetime) -> list[Outcome]:
    """Claimed for a mode no longer in force and not sent yet: back to the outbox, whose sweep
    gives it the plan of the mode in force."""
    return _unsent(claimed, now, "the provider's mode changed before its send slot: re-planned")


def reloaded(claimed: Sequence[Claimed], now: datetime) -> list[Outcome]:
    """Claimed and not sent yet at a re-plan (a reload; unknown or credentials began or ended): back
    to the outbox, whose re-plan gives it the plan of the routes in force."""
    return _unsent(claimed, now, "re-planned before its send slot (a reload, or a change of state)")


def _unsent(claimed: Sequence[Claimed], now: datetime, detail: str) -> list[Outcome]:
    return [
        Outcome(c.delivery.id, "retry", now, now, detail, now, claim=c.delivery.attempts) for c in claimed
    ]


def unconfigured(name: str) -> str:
    """The failed attempt's detail for a step on a channel no longer in the configuration."""
    return f"channel {name!r} is not configured"


def acknowledged_meanwhile(name: str, claimed: Claimed, now: datetime) -> Outcome:
    """Acknowledged while it waited for a send slot: not sent (the store supersedes a retry of an
    acknowledged notification's delivery, as for one acknowledged while in flight)."""
    log.info(
        "not sending %s via %s: acknowledged while it waited for a send slot",
        claimed.notification.id,
        name,
        extra={"event": "delivery.superseded", "notification_id": claimed.notification.id, "channel": name},
    )
    detail = "acknowledged before its send slot: not sent"
    return Outcome(claimed.delivery.id, "retry", now, now, detail, now, claim=claimed.delivery.attempts)
