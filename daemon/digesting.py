"""Burst digests, the dispatcher's side: what waits for a paced channel's next send slot.

A digest-enabled channel sends one message at a time. Before each, the dispatcher claims what is
due (up to ``max_items`` waiting in all) into a :class:`Digesting`, which asks the pure
:func:`daemon.core.digest.next_send` what the slot carries: one delivery, or one digest of
everything waiting for one destination. A claim may wait here for many slots (escalation steps go
one at a time, SMS digests one destination at a time), so the dispatcher renews the leases of
those waiting past half their lease (:meth:`Digesting.expiring`, :meth:`Digesting.renewed`): a
lease run out would make the delivery pending again and the channel would claim, and send, it
twice. Claims made for a mode no longer in force are taken back out (:meth:`Digesting.stale`)
for the outbox to re-plan, rather than sent on the backup channel after recovery.

A digest is one :class:`OutboundMessage` marked with :data:`channels.digests.DIGEST_LABEL`; every
delivery it carries is recorded on its own, delivered with a detail naming the digest, or with its
own retry when the digest failed (see the dispatcher). Its id, which is also the idempotency key
the channel sends, is a hash of the delivery ids it carries: the same deliveries re-sent after a
retry, a restart or another node's takeover make the same digest, which a receiver can drop.

An escalation step (a delivery with an ACK code) is never carried: its own message holds the
"Reply ACK <code>" line and the button, so it goes on its own. A delivery that cannot be rendered
(a bug, not the channel's fault) comes back as :class:`Broken` for the dispatcher to record.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from channels.base import OutboundMessage
from channels.digests import DIGEST_LABEL, sms_text
from channels.gsm import segment_count
from daemon.core.digest import (
    SLACK_LAYOUT,
    Digest,
    Item,
    Layout,
    Pending,
    build,
    next_send,
)
from daemon.core.model import Mode, ProviderState
from daemon.drills import SOURCE as DRILL_SOURCE
from daemon.rendering import Renderer
from daemon.store.values import Claimed

#: Alertmanager's alert identity, as the webhook intake labels it; duplicates share it
FINGERPRINT_LABELS = ("alert_fingerprint", "fingerprint")
#: Slack: a header holds 150 characters with the severity in front; a section 3000 (escaped)
SLACK_HEADLINE_MAX = 120
SLACK_BODY_MAX = 2900


def slack_fits(headline: str, body: str) -> bool:
    """Within Slack's Block Kit limits once the channel escapes ``& < >`` (each grows to 4-5 chars)."""
    escaped = len(body) + 4 * body.count("&") + 3 * (body.count("<") + body.count(">"))
    return len(headline) <= SLACK_HEADLINE_MAX and escaped <= SLACK_BODY_MAX


def sms_fits(segments: int) -> Callable[[str, str], bool]:
    """Within ``segments`` SMS segments as :func:`channels.digests.sms_text` joins it."""
    return lambda headline, body: segment_count(sms_text(headline, body)) <= segments


def _one_slot(message: OutboundMessage) -> float:
    return 1.0


def _shared_destination(message: OutboundMessage) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True, slots=True)
class DigestPolicy:
    """How one channel digests: its pace, its target, its size limit, where each message goes."""

    #: send slots per second (messages, or SMS segments) the channel's pacing allows
    pace_per_s: float
    drain_target_s: float = 30.0
    max_items: int = 500
    top: int = 5
    link: str | None = "/v1/notifications?since={since}"
    layout: Layout = SLACK_LAYOUT
    fits: Callable[[str, str], bool] = slack_fits
    #: the send slots one notification takes on its own (SMS: segments times numbers)
    cost: Callable[[OutboundMessage], float] = _one_slot
    #: who a rendered notification reaches on this channel; only those for the same share a digest
    destination: Callable[[OutboundMessage], tuple[str, ...]] = _shared_destination


@dataclass(frozen=True, slots=True)
class _Waiting:
    claimed: Claimed
    pending: Pending
    #: whom it was rendered for (the directory maps a notification's recipients per channel)
    recipients: tuple[str, ...]
    #: when the claim's lease runs out, unless renewed
    lease_until: datetime


def digest_id(carried: Sequence[Claimed]) -> str:
    """The same for the same deliveries in any order: ``D`` and 10 base32 characters of a SHA-256."""
    ids = ",".join(str(d) for d in sorted(c.delivery.id for c in carried))
    digest = hashlib.sha256(ids.encode("ascii")).digest()
    return "D" + base64.b32encode(digest).decode("ascii")[:10]


@dataclass(frozen=True, slots=True)
class Broken:
    """Claimed deliveries this channel could not render or digest; ``error`` says why."""

    claimed: tuple[Claimed, ...]
    error: Exception


@dataclass(frozen=True, slots=True)
class DigestSend:
    """One digest and the deliveries it carries."""

    digest: Digest
    message: OutboundMessage
    carried: tuple[Claimed, ...]


class Digesting:
    """The claimed deliveries of one digest-enabled channel waiting for their send slot."""

    def __init__(
        self, name: str, policy: DigestPolicy, renderer: Renderer, state: Callable[[], ProviderState]
    ) -> None:
        self.name = name
        self.policy = policy
        self._renderer = renderer
        self._state = state
        self._waiting: list[_Waiting] = []
        #: a burst is on: the next slots carry digests, not another "first critical"
        self._bursting = False

    @property
    def room(self) -> int:
        return self.policy.max_items - len(self._waiting)

    def add(self, claimed: Sequence[Claimed], lease_until: datetime) -> list[Broken]:
        """Queue each for a send slot; those that cannot be rendered come back instead."""
        broken: list[Broken] = []
        for c in claimed:
            try:
                self._waiting.append(self._wait(c, lease_until))
            except Exception as exc:  # one bad notification must not stop the channel: recorded
                broken.append(Broken((c,), exc))
        return broken

    def _wait(self, claimed: Claimed, lease_until: datetime) -> _Waiting:
        # Rendered as it would go alone: the recipients are the channel's (directory-mapped) ones.
        message = self._renderer.render(self.name, claimed)
        destination = (self.policy.destination(message), message.drill)
        cost = self.policy.cost(message)
        pending = Pending(
            claimed.notification.severity,
            cost,
            destination,
            alone=message.acknowledgeable,
            group=claimed.delivery.digest,
        )
        return _Waiting(claimed, pending, message.recipients, lease_until)

    def expiring(self, before: datetime) -> list[int]:
        """The delivery ids of the claims waiting whose lease runs out before ``before``."""
        return [w.claimed.delivery.id for w in self._waiting if w.lease_until < before]

    def renewed(self, asked: Sequence[int], kept: set[int], lease_until: datetime) -> list[Claimed]:
        """Record the store's renewal of ``asked``: ``kept`` now run to ``lease_until``; the rest
        (no longer this node's claims) are taken out and returned."""
        asked_ids = set(asked)
        lost = [w.claimed for w in self._waiting if w.claimed.delivery.id in asked_ids - kept]
        self._waiting = [
            replace(w, lease_until=lease_until) if w.claimed.delivery.id in kept else w
            for w in self._waiting
            if w.claimed.delivery.id not in asked_ids or w.claimed.delivery.id in kept
        ]
        return lost

    def stale(self, mode: Mode) -> list[Claimed]:
        """Take out and return the claims planned for another mode than ``mode``."""
        stale = [w.claimed for w in self._waiting if w.claimed.delivery.mode != mode]
        if stale:
            self._waiting = [w for w in self._waiting if w.claimed.delivery.mode == mode]
        return stale

    def next(self) -> Claimed | DigestSend | Broken | None:
        """What the next send slot carries, taken out of the waiting list."""
        p = self.policy
        pending = [w.pending for w in self._waiting]
        choice = next_send(
            pending, pace_per_s=p.pace_per_s, drain_target_s=p.drain_target_s, bursting=self._bursting
        )
        if choice is None:
            return None
        chosen = [self._waiting[i] for i in choice.indexes]
        taken = set(choice.indexes)
        self._waiting = [w for i, w in enumerate(self._waiting) if i not in taken]
        self._bursting = choice.bursting
        if choice.kind == "single":
            return chosen[0].claimed
        carried = [w.claimed for w in chosen]
        try:
            return self._digest(carried, chosen[0].recipients)
        except Exception as exc:  # taken out of the waiting list already: the dispatcher records them
            return Broken(tuple(carried), exc)

    def release(self) -> list[Claimed]:
        """Everything still waiting (at shutdown: it goes back to the outbox)."""
        released = [w.claimed for w in self._waiting]
        self._waiting = []
        return released

    def _digest(self, carried: list[Claimed], recipients: tuple[str, ...]) -> DigestSend:
        p = self.policy
        items = [_item(c) for c in carried]
        digest = build(digest_id(carried), items, fits=p.fits, layout=p.layout, top=p.top, link=p.link)
        message = OutboundMessage(
            notification_id=digest.id,
            idempotency_key=digest.id,
            severity=digest.severity.value,
            subject=digest.headline,
            body=digest.body,
            created_at=min(c.notification.created_at for c in carried),
            source="backchannel",
            recipients=recipients,
            labels={DIGEST_LABEL: digest.id},
            provider_state=self._state().value,
            drill=_is_drill(carried[0]),
        )
        return DigestSend(digest, message, tuple(carried))


def _item(claimed: Claimed) -> Item:
    n = claimed.notification
    fingerprint = next((n.labels[k] for k in FINGERPRINT_LABELS if n.labels.get(k)), None)
    # A firing and its resolution share the fingerprint but are different news.
    key = f"{fingerprint}:{n.labels.get('alert_status', '')}" if fingerprint else n.idempotency_key
    return Item(key=key, severity=n.severity, subject=n.subject, created_at=n.created_at)


def _is_drill(claimed: Claimed) -> bool:
    return claimed.notification.source == DRILL_SOURCE
