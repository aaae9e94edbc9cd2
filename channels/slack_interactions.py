"""Slack interactivity: the Acknowledge button, and checking that a click really came from Slack.

Slack signs every interaction request (https://api.slack.com/authentication/verifying-requests-from-slack):
``X-Slack-Signature`` is ``v0=`` + hex HMAC-SHA256 of ``v0:{X-Slack-Request-Timestamp}:{raw body}``
keyed with the app's signing secret. A timestamp more than five minutes away from our clock is
refused (a replayed request), and the comparison takes constant time. The body is a form with one
field, ``payload``: the JSON of the interaction (https://api.slack.com/reference/interaction-payloads/block-actions).

A verified click proves that Slack relayed it for a workspace member who could see our message (the
button's value comes from the message our app posted, not from the user). Who clicked is recorded,
not checked against a list: on-call rotas change faster than config, and a Slack id is all we get.
The signing secret belongs to the app, not to a workspace, so the app must stay undistributed
(installed in our workspace only), or other workspaces' clicks would verify too.

Exceptions::

    InteractionError           the request cannot be used (the API answers 4xx)
      ├── ForgedInteraction    signature or timestamp missing, stale or wrong (answer 401)
      └── MalformedInteraction signed, but not an interaction we can read (answer 400)
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
#: Slack's advice: refuse requests whose timestamp is more than five minutes off
MAX_SKEW_S = 300.0
#: the ``action_id`` of our button; its ``value`` is the notification id
ACK_ACTION = "backchannel_ack"


class InteractionError(ValueError):
    """The Slack interaction request was rejected."""


class ForgedInteraction(InteractionError):
    """The request's Slack signature does not verify."""


class MalformedInteraction(InteractionError):
    """The request is signed but is not an interaction payload we understand."""


@dataclass(frozen=True, slots=True)
class AckClick:
    """Someone clicked Acknowledge on a notification's message."""

    notification_id: str
    #: Slack's user name (or id when it has none) of who clicked
    user: str


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` Slack would send for ``body`` at ``timestamp``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(
    secrets: Sequence[str], timestamp: str | None, body: bytes, presented: str | None, now_s: float
) -> None:
    """Raise ForgedInteraction unless one of ``secrets`` signed ``body`` at a recent ``timestamp``."""
    if not presented or not timestamp:
        raise ForgedInteraction(f"no {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
    try:
        age = abs(now_s - float(timestamp))
    except ValueError:
        raise ForgedInteraction(f"{TIMESTAMP_HEADER} is not a number") from None
    if age > MAX_SKEW_S:
        raise ForgedInteraction("the request's timestamp is more than five minutes away")
    matched = False
    # bytes, not str: compare_digest raises TypeError on a str with a non-ASCII character (a 500)
    offered = presented.encode()
    for secret in secrets:  # no early exit: the time taken says nothing about which secret matched
        matched |= hmac.compare_digest(signature(secret, timestamp, body).encode(), offered)
    if not matched:
        raise ForgedInteraction()


def parse_ack(body: bytes) -> AckClick | None:
    """The Acknowledge click in a verified request body; None for any other interaction."""
    fields = parse_qs(body.decode("utf-8", "replace"))
    try:
        payload: Any = json.loads(fields["payload"][0])
    except (KeyError, IndexError, ValueError):
        raise MalformedInteraction("no JSON payload field") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    actions = [a for a in payload.get("actions") or () if isinstance(a, dict)]
    click = next((a for a in actions if a.get("action_id") == ACK_ACTION), None)
    if click is None:
        return None
    user = payload.get("user") or {}
    who = str(user.get("username") or user.get("name") or user.get("id") or "a Slack user")
    if not isinstance(click.get("value"), str) or not click["value"]:
        raise MalformedInteraction("the Acknowledge button carries no notification id")
    return AckClick(click["value"], who)


def ack_block(notification_id: str) -> dict[str, Any]:
    """The Block Kit ``actions`` block with the Acknowledge button (https://api.slack.com/reference/block-kit/block-elements#button)."""
    button = {
        "type": "button",
        "action_id": ACK_ACTION,
        "text": {"type": "plain_text", "text": "Acknowledge", "emoji": False},
        "style": "primary",
        "value": notification_id,
    }
    return {"type": "actions", "block_id": "backchannel_ack", "elements": [button]}
