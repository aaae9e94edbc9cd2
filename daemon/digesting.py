"""Burst digests, the dispatcher's side: what waits for a paced channel's next send slot.

A digest-enabled channel sends one message at a time. Before each, the dispatcher claims what is
due (up to ``max_items`` waiting in all) into a :class:`Digesting`, which asks the pure
:func:`daemon.core.digest.next_send` what the slot carries: one delivery, or one digest of
everything waiting for one destination. Claimed deliveries wait here at most one drain target (a
burst turns them into a digest at the next slot), well inside their lease.

A digest is one :class:`OutboundMessage` marked with :data:`channels.digests.DIGEST_LABEL`; every
delivery it carries is recorded on its own, delivered with a detail naming the digest, or with its
own retry when the digest failed (see the dispatcher).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from daemon.core.model import ProviderState
from daemon.drills import SOURCE as DRILL_SOURCE
from daemon.ids import new_id
from daemon.rendering import Renderer
from daemon.store.base import Claimed

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

    def add(self, claimed: Sequence[Claimed]) -> None:
        for c in claimed:
            # Rendered as it would go alone: the recipients are the channel's (directory-mapped) ones.
            message = self._renderer.render(self.name, c)
            destination = (self.policy.destination(message), message.drill)
            pending = Pending(c.notification.severity, self.policy.cost(message), destination)
            self._waiting.append(_Waiting(c, pending, message.recipients))

    def next(self, now: datetime) -> Claimed | DigestSend | None:
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
        return self._digest([w.claimed for w in chosen], chosen[0].recipients, now)

    def release(self) -> list[Claimed]:
        """Everything still waiting (at shutdown: it goes back to the outbox)."""
        released = [w.claimed for w in self._waiting]
        self._waiting = []
        return released

    def _digest(self, carried: list[Claimed], recipients: tuple[str, ...], now: datetime) -> DigestSend:
        p = self.policy
        digest_id = "D" + new_id(now)[-8:]
        items = [_item(c) for c in carried]
        digest = build(digest_id, items, fits=p.fits, layout=p.layout, top=p.top, link=p.link)
        message = OutboundMessage(
            notification_id=digest_id,
            idempotency_key=digest_id,
            severity=digest.severity.value,
            subject=digest.headline,
            body=digest.body,
            created_at=min(c.notification.created_at for c in carried),
            source="backchannel",
            recipients=recipients,
            labels={DIGEST_LABEL: digest_id},
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
