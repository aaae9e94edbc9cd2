"""Rendering: one claimed delivery becomes the :class:`OutboundMessage` a channel sends.

The dispatcher decides when and where; this module decides what the channel is handed. Kept
apart from the dispatcher so what a message says (recipients mapped through the directory,
templates per route) can grow without touching the send loop.
"""

from __future__ import annotations

from collections.abc import Callable

from channels.base import OutboundMessage
from daemon.core.model import ProviderState
from daemon.drills import SOURCE as DRILL_SOURCE
from daemon.store.base import Claimed


class Renderer:
    """Builds the message for one send attempt of one claimed delivery on one channel."""

    def __init__(self, state: Callable[[], ProviderState]) -> None:
        self._state = state

    def render(self, channel: str, claimed: Claimed) -> OutboundMessage:
        n = claimed.notification
        return OutboundMessage(
            notification_id=n.id,
            idempotency_key=n.id,
            severity=n.severity.value,
            subject=n.subject,
            body=n.body,
            created_at=n.created_at,
            source=n.source,
            recipients=n.recipients,
            labels=n.labels,
            attempt=claimed.delivery.attempts,
            provider_state=self._state().value,
            raw=n.raw,
            mail_from=n.mail_from,
            drill=n.source == DRILL_SOURCE,
        )
