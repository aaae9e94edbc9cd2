"""Digest messages: one message standing for many notifications (docs/digests.md).

The dispatcher builds a digest already fitted to the channel's size limit and marks it with
:data:`DIGEST_LABEL` (the digest's id). Adapters that compose their own text (SMS) send a
digest's text as built instead: their usual prefix and id suffix would push it past its budget.
"""

from __future__ import annotations

from channels.base import OutboundMessage

DIGEST_LABEL = "backchannel_digest"


def is_digest(message: OutboundMessage) -> bool:
    return DIGEST_LABEL in message.labels


def sms_text(headline: str, body: str) -> str:
    """A digest's SMS text: the headline, then the body on the same line."""
    return f"{headline}. {body}" if body else headline
