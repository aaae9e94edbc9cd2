"""Slack Block Kit messages: what a notification looks like in a channel.

:func:`render` gives the ``text`` fallback (mobile notifications, screen readers) and the blocks: a
header with the severity, the body as an mrkdwn section, a context line (source, id, attempt, the
primary email's state) and, for an escalation, the Acknowledge button.

Every mrkdwn text built from a notification is escaped, the ``text`` fallback too: Slack parses it
as mrkdwn and shows it in push notifications, so an unescaped ``<!channel>`` or ``<@U123>`` in a
subject pinged people and ``<https://...|label>`` planted a link. The header is ``plain_text``,
which Slack never parses, so it is not escaped (an ``&amp;`` there would show as such). Texts are
cut to Slack's documented limits, an escaped text never inside one of its entities.
"""

from __future__ import annotations

from typing import Any

from channels.base import OutboundMessage
from channels.slack_interactions import ack_block

# Block Kit limits: https://api.slack.com/reference/block-kit/blocks (header 150, section text 3000).
HEADER_MAX = 150
SECTION_MAX = 3000
# chat.postMessage truncates ``text`` past 40,000 characters and advises under 4,000.
TEXT_MAX = 4000
#: what :func:`escape` writes, the only entities :func:`cut` keeps whole
_ENTITIES = ("&amp;", "&lt;", "&gt;")
_ENTITY_LONGEST = max(len(e) for e in _ENTITIES)
SEVERITY_EMOJI = {"critical": ":rotating_light:", "high": ":red_circle:", "warning": ":warning:"}


def render(message: OutboundMessage) -> tuple[str, list[dict[str, Any]]]:
    """The ``text`` fallback (notifications, screen readers) and the Block Kit blocks for ``message``."""
    drill = "[DRILL] " if message.drill else ""
    title = f"{drill}{message.severity.upper()}: {message.subject}"
    emoji = SEVERITY_EMOJI.get(message.severity, ":information_source:")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": cut(f"{emoji} {title}", HEADER_MAX, escaped=False),
                "emoji": True,
            },
        }
    ]
    if message.body.strip():
        excerpt = cut(escape(message.body), SECTION_MAX)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": excerpt}})
    context = (
        f"source *{escape(message.source)}* | id `{message.notification_id}`"
        f" | attempt {message.attempt} | primary email {message.provider_state}"
    )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(context, SECTION_MAX)}]})
    if message.acknowledgeable:
        blocks.append(ack_block(message.notification_id))
    text = cut(escape(f"{title}\n{message.body}".strip()), TEXT_MAX)
    return text, blocks


def escape(text: str) -> str:
    """Slack mrkdwn control characters: https://api.slack.com/reference/surfaces/formatting#escaping."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int, *, escaped: bool = True) -> str:
    """At most ``limit`` characters, ending in an ellipsis when shortened.

    ``escaped`` (mrkdwn made by :func:`escape`): an entity the cut would split is dropped whole,
    since a dangling ``&am`` shows as such. Only the three entities :func:`escape` writes count: a
    text with an ``&`` and no ``;`` after it lost everything from that ``&`` on. A ``plain_text``
    field is not escaped (``escaped=False``): its ``&`` is a character like any other.
    """
    if len(text) <= limit:
        return text
    kept = text[: limit - 1]
    if escaped:
        amp = kept.rfind("&", -(_ENTITY_LONGEST - 1))
        if amp >= 0 and text.startswith(_ENTITIES, amp) and not kept.startswith(_ENTITIES, amp):
            kept = kept[:amp]
    return kept + "\u2026"


def metadata(message: OutboundMessage) -> dict[str, Any]:
    return {
        "notification_id": message.notification_id,
        "idempotency_key": message.idempotency_key,
        "severity": message.severity,
        "attempt": message.attempt,
    }
