"""What every delivery channel shares: the outbound message, the receipt and the one error.

Exceptions::

    ChannelError                 a send did not deliver; ``permanent`` says whether retrying can help
      ├── ChannelConfigError     the channel's own settings are unusable (always permanent)
      └── (adapters raise ChannelError only, mapping vendor errors at their boundary)

Adapters never retry and never decide policy: they send once and either return a
:class:`Receipt` or raise :class:`ChannelError`. The dispatcher alone retries and fails over.
``channels`` never imports ``daemon``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One notification rendered for one send attempt on one channel."""

    notification_id: str
    idempotency_key: str
    severity: str
    subject: str
    body: str
    created_at: datetime
    source: str = "api"
    recipients: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    attempt: int = 1
    provider_state: str = "healthy"
    raw: bytes | None = None
    mail_from: str | None = None
    drill: bool = False
    #: the channel's id of an earlier message about the same matter (its Receipt.remote_id), so a
    #: follow-up (a resolved alert, say) can go into that message's thread
    thread: str | None = None
    #: an escalation waits for someone to acknowledge: Slack adds an Acknowledge button
    acknowledgeable: bool = False
    #: the code to reply with ("ACK <code>") while ``acknowledgeable``
    ack_code: str | None = None


#: the diagnostic type of a refusal found here, not replied by a server (as Postfix's ``X-Postfix``)
FOUND_HERE = "x-backchannel"
#: an enhanced status code (RFC 3463) where RFC 2034 puts it: first in a reply's text
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")


def clean_text(text: str) -> str:
    """A server's reply as text that can be stored and put in a report. A reply that is not UTF-8
    reaches us with its bytes as surrogates (``surrogateescape``): they are decoded again as
    UTF-8, else as Windows-1252 (the usual Latin-1), anything left as U+FFFD."""
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no byte made: nothing to decode again
        return text.encode("utf-8", "replace").decode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A recipient an SMTP server refused, with its reply (RFC 5321 §4.2): what a follow-up
    retries (4xx) or a delivery status notification reports to the sender (5xx)."""

    recipient: str
    code: int
    #: the reply's text, without the code (an enhanced status code first, when the server sends one)
    text: str
    #: RFC 3464's diagnostic type: ``smtp`` for a server's reply; :data:`FOUND_HERE` for a failure
    #: found before any server replied (its ``code`` then only says permanent or not, and the
    #: text, led by an enhanced code, is all a report shows)
    diagnostic: str = "smtp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", clean_text(self.text))

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def reply(self) -> str:
        text = " ".join(self.text.split())
        return f"{self.code} {text}" if self.diagnostic == "smtp" else text

    @property
    def enhanced(self) -> tuple[int, int, int] | None:
        """The reply's enhanced status code (RFC 3463), where RFC 2034 puts it: first in its text."""
        found = _ENHANCED.match(self.text.strip())
        return None if found is None else (int(found[1]), int(found[2]), int(found[3]))

    @property
    def about_this_mail(self) -> bool:
        """The reply concerns this mail, not the server (RFC 3463 §3): an address (x.1.x), the
        recipient's mailbox (x.2.x: full, busy, disabled) or the recipients per message (x.5.3).
        A reply without an enhanced code, with one of another subject (x.3 the mail system, x.4
        routing, x.7 policy and throttling) or whose class disagrees with its code may be the server's."""
        code = self.enhanced
        if code is None or code[0] != self.code // 100:
            return False
        return code[1] in (1, 2) or code[1:] == (5, 3)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a channel reports after a successful send."""

    channel: str
    detail: str = ""
    remote_id: str | None = None
    #: recipients the send did not reach though others got it (email); for mail relayed from the
    #: smart host those refused for now get a follow-up, those refused for good a report to its sender
    refused: tuple[Refusal, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", clean_text(self.detail))


class ChannelError(Exception):
    """The channel could not deliver the message."""

    def __init__(
        self,
        message: str | None = None,
        *,
        permanent: bool = False,
        retry_after_s: float | None = None,
        service_fault: bool = False,
        remote_id: str | None = None,
        refused: tuple[Refusal, ...] = (),
        later: bool = False,
        local: bool = False,
    ) -> None:
        super().__init__(clean_text(message or self.__doc__ or ""))
        #: retrying this message on this channel cannot succeed (bad address, revoked token, 410)
        self.permanent = permanent
        #: the remote asked us to wait this long before the next attempt (HTTP Retry-After)
        self.retry_after_s = retry_after_s
        #: the failure says the service itself is unwell (refused, timeout, 4xx/5xx greeting),
        #: not something about this one message; the primary email channel feeds it to health tracking
        self.service_fault = service_fault
        #: the server will take this message later, for reasons of its own (a full or busy
        #: mailbox): on the primary email channel it keeps trying past its attempts, for days,
        #: unless the plan fails over to another channel (``daemon.outcomes.kept_for_later``); it
        #: says nothing of the provider's health
        self.later = later
        #: the failure is this host's own network (a name that does not resolve, no route out):
        #: retried as a service fault is, but no evidence against the service's health
        self.local = local
        #: what the send did deliver before it failed (some of its targets): kept on the delivery,
        #: so what was posted can still be threaded into and edited (``Receipt.remote_id``'s form)
        self.remote_id = remote_id
        #: the server's reply for each recipient, when it refused this message (email: its
        #: recipients, its sender or its content), as a delivery status notification reports them
        self.refused = refused

    @property
    def reason(self) -> str:
        return str(self)


class ChannelConfigError(ChannelError):
    """The channel is misconfigured."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, permanent=True)


@runtime_checkable
class Channel(Protocol):
    """A delivery channel: send one message, raise ChannelError if it did not go."""

    name: str

    async def send(self, message: OutboundMessage) -> Receipt: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class RelaysMail(Protocol):
    """A channel that sends a relayed message's own bytes (``OutboundMessage.raw``) to its envelope
    (email): a later step of this kind relays the whole message again, so the refusals of an
    earlier step call for no follow-up and no report (:mod:`daemon.refusals`)."""

    relays_mail: bool


@runtime_checkable
class EditsOnAck(Protocol):
    """A channel that can rewrite what it posted once the escalation is acknowledged (Slack)."""

    async def acknowledged(self, remote_id: str, message: OutboundMessage, ack: Acknowledgement) -> int:
        """Rewrite the messages of one send (its receipt's ``remote_id``) as ``message`` saying
        ``ack``, without a way to acknowledge; return how many; ChannelError if any failed."""
        ...


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """Who stopped an escalation, how and when, as a channel may show it."""

    by: str
    #: api, slack or sms
    via: str
    at: datetime
