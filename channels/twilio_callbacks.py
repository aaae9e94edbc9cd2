"""Twilio message status callbacks and inbound replies: check who sent them, then read what they say.

Twilio POSTs a form to the ``StatusCallback`` URL each time a message changes status
(https://www.twilio.com/docs/messaging/guides/track-outbound-message-status) and signs it
with ``X-Twilio-Signature``: an HMAC of the full URL it called plus the sorted form fields,
keyed with the account's auth token (https://www.twilio.com/docs/usage/security#validating-requests).
Verification uses twilio's own :class:`RequestValidator`, so we compute nothing ourselves.

The URL to verify against is the one configured as ``status_callback``, not the one the
request arrived at: behind a TLS-terminating proxy the two differ and every signature fails.

Inbound messages (a reply "ACK <code>") arrive at the number's messaging webhook
(https://www.twilio.com/docs/messaging/guides/webhook-request), signed the same way, and are
answered with TwiML (https://www.twilio.com/docs/messaging/twiml), or with an empty answer when
the sender is nobody we text: no SMS back, so a stranger learns nothing and costs nothing.

Exceptions::

    CallbackError           the callback cannot be used (the API answers 4xx)
      ├── ForgedCallback    signature missing or wrong (answer 403)
      └── MalformedCallback signed, but a required field is missing or unknown (answer 400)
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape

SIGNATURE_HEADER = "X-Twilio-Signature"


class CallbackError(ValueError):
    """The status callback was rejected."""


class ForgedCallback(CallbackError):
    """The status callback's signature does not verify."""


class MalformedCallback(CallbackError):
    """The status callback lacks a field it must carry."""


class DeliveryOutcome(enum.StrEnum):
    """What a status means for the delivery trail."""

    #: the handset (or the carrier, for SMS) confirmed receipt
    DELIVERED = "delivered"
    #: Twilio or the carrier gave up: the plan's step has failed
    FAILED = "failed"
    #: still on its way; a later callback will settle it
    PENDING = "pending"


#: https://www.twilio.com/docs/messaging/api/message-resource#message-status-values
_OUTCOMES: Mapping[str, DeliveryOutcome] = {
    "delivered": DeliveryOutcome.DELIVERED,
    "read": DeliveryOutcome.DELIVERED,
    "undelivered": DeliveryOutcome.FAILED,
    "failed": DeliveryOutcome.FAILED,
    "canceled": DeliveryOutcome.FAILED,
    "sent": DeliveryOutcome.PENDING,
    "queued": DeliveryOutcome.PENDING,
    "accepted": DeliveryOutcome.PENDING,
    "scheduled": DeliveryOutcome.PENDING,
    "sending": DeliveryOutcome.PENDING,
    "partially_delivered": DeliveryOutcome.PENDING,
}


@dataclass(frozen=True, slots=True)
class StatusCallback:
    """One verified status change of one message."""

    message_sid: str
    status: str
    outcome: DeliveryOutcome
    #: Twilio's error code for undelivered/failed (https://www.twilio.com/docs/api/errors)
    error_code: int | None = None


def verify_status_callback(
    auth_token: str, url: str, form: Mapping[str, str], signature: str | None
) -> StatusCallback:
    """Verify ``signature`` over ``url`` and ``form``, then parse ``form``; raise CallbackError if unusable.

    ``form`` may be a multi-dict (Starlette's ``FormData``): repeated fields are all signed.
    """
    verify_signature(auth_token, url, form, signature)
    return parse_status_callback(form)


def verify_signature(auth_token: str, url: str, form: Mapping[str, str], signature: str | None) -> None:
    """Raise ForgedCallback unless ``signature`` is Twilio's over ``url`` and ``form``."""
    if not signature:
        raise ForgedCallback(f"no {SIGNATURE_HEADER} header")
    from twilio.request_validator import RequestValidator  # only when a callback arrives: twilio is heavy

    if not RequestValidator(auth_token).validate(url, form, signature):
        raise ForgedCallback()


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A verified SMS sent to our number."""

    sender: str
    body: str


def verify_inbound(
    auth_token: str, url: str, form: Mapping[str, str], signature: str | None
) -> InboundMessage:
    """Verify an inbound-message webhook like a status callback, then read its sender and text."""
    verify_signature(auth_token, url, form, signature)
    sender = form.get("From")
    if not sender:
        raise MalformedCallback("no From")
    return InboundMessage(sender, form.get("Body", ""))


_ACK_REPLY = re.compile(r"\s*ack\s*[:#]?\s*([0-9a-z]{6})\W*", re.IGNORECASE)


def ack_code_in(text: str) -> str | None:
    """The code in a reply such as ``ACK 7K3QZP`` (any case, a colon or # allowed), else None."""
    found = _ACK_REPLY.fullmatch(text)
    return None if found is None else found.group(1)


def twiml_reply(text: str) -> str:
    """A TwiML document answering the sender with ``text``."""
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(text)}</Message></Response>'


#: TwiML that sends nothing back: an empty Response (https://www.twilio.com/docs/messaging/twiml)
TWIML_SILENCE = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def parse_status_callback(form: Mapping[str, str]) -> StatusCallback:
    """Read MessageSid, MessageStatus and ErrorCode from an (already verified) callback form."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    if not sid:
        raise MalformedCallback("no MessageSid")
    outcome = _OUTCOMES.get(status)
    if outcome is None:
        raise MalformedCallback(f"unknown MessageStatus {status!r}")
    return StatusCallback(sid, status, outcome, _error_code(form.get("ErrorCode")))


def _error_code(raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise MalformedCallback(f"ErrorCode {raw!r} is not a number") from exc
