"""What the email channel's SMTP server said, or how reaching it failed, as a
:class:`~channels.base.ChannelError` or as each recipient's :class:`~channels.base.Refusal`.

Reply codes map to outcomes per RFC 5321 §4.2.1 (https://www.rfc-editor.org/rfc/rfc5321#section-4.2.1)
and RFC 4954 §6 for AUTH (https://www.rfc-editor.org/rfc/rfc4954#section-6):

====================================================  =========  =============
what happened                                         permanent  service_fault
====================================================  =========  =============
refused, timeout, connection lost, TLS failure         no         yes
any other 4xx (421 included)                          no         yes
4xx to every recipient, each about the mail (below)   no         no
530 / 534 / 535: authentication failed                no         yes
5xx to the greeting, HELO or MAIL FROM                yes        yes
5xx to DATA or at its end (this message)              yes        no
5xx to every recipient                                yes        no
some recipients refused, at least one accepted        delivered (Receipt.refused names them)
an address beyond ASCII without SMTPUTF8, others not  delivered (refused here, 5.6.7, RFC 6531 §3.5)
====================================================  =========  =============

A 4xx to a recipient whose enhanced status code (RFC 3463) is about the mail, not the server
(x.1.x an address, x.2.x the mailbox: full, busy, disabled for now; 4.5.3 too many recipients),
says nothing of the provider's health: a full mailbox retried all day must not push the provider
toward an outage. It is ``ChannelError.later``: it keeps trying for days, as mail servers do,
unless the plan fails over from it to another channel (after its attempts, as usual). A 4xx without an
enhanced code, or of another class (4.3.x the mail system, 4.4.x routing, 4.7.x policy and
throttling such as Exchange Online's ``451 4.7.500 Server busy``), may be the provider's and counts.

The session that meets these replies is :class:`~channels.email.EmailChannel`'s.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

import aiosmtplib

from channels.base import FOUND_HERE, ChannelError, Refusal

_AUTH_CODES = frozenset({530, 534, 535})


#: errnos that mean no packet left this host: our network, not the provider (the SMTP check reads
#: them so too)
LOCAL_ERRNOS = frozenset({errno.ENETUNREACH, errno.ENETDOWN})


def our_network(exc: BaseException) -> bool:
    """Whether a failure to reach the server is our own: its name did not resolve (our resolver
    may be the one failing) or no route left this host. The SMTP check reads these as UNKNOWN;
    fed to health tracking as the provider's fault, a few such sends declared an outage of a
    provider that was up. They stay service faults for the delivery: kept queued until it works.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror) or (isinstance(seen, OSError) and seen.errno in LOCAL_ERRNOS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def each_refused(refusals: Sequence[aiosmtplib.SMTPRecipientRefused]) -> tuple[Refusal, ...]:
    return tuple(Refusal(r.recipient, r.code, r.message) for r in refusals)


def refusals_of(refused: dict[str, aiosmtplib.SMTPResponse]) -> tuple[Refusal, ...]:
    return tuple(Refusal(addr, r.code, r.message) for addr, r in refused.items())


def refused_here(recipients: Sequence[str], why: str) -> tuple[Refusal, ...]:
    """A failure for good found before any server replied, as each recipient's (its sender can be
    told: RFC 5321 §6.1 holds whoever found it)."""
    return tuple(Refusal(r, 554, why, diagnostic=FOUND_HERE) for r in recipients)


def all_refused(recipients: Sequence[str], exc: aiosmtplib.SMTPResponseException) -> tuple[Refusal, ...]:
    """A reply that refused the whole message (to MAIL FROM or DATA), as each recipient's."""
    return tuple(Refusal(r, exc.code, exc.message) for r in recipients)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def response_error(code: int, text: str, refused: tuple[Refusal, ...] = ()) -> ChannelError:
    reply = f"{code} {text}"
    if code in _AUTH_CODES:
        return ChannelError(
            f"SMTP authentication failed (credentials need renewing): {reply}", service_fault=True
        )
    permanent = 500 <= code < 600
    return ChannelError(
        f"SMTP server answered {reply}", permanent=permanent, service_fault=True, refused=refused
    )


def content_error(code: int, text: str, refused: tuple[Refusal, ...]) -> ChannelError:
    """A refusal at the end of DATA: the server took the session and judged this message (its
    size, a line too long, its content, a spam filter). A 5xx there says nothing of the provider's
    health, so one bad message cannot push it toward an outage; a 4xx there still may."""
    if 500 <= code < 600:
        return ChannelError(
            f"SMTP server refused the message: {code} {text}", permanent=True, refused=refused
        )
    return response_error(code, text, refused)


def recipients_error(refused: tuple[Refusal, ...], *, relayed: bool) -> ChannelError:
    """Every recipient refused. Some for good and some for now, in a relayed message: it fails
    for good, so its sender hears of the first at once and a follow-up retries the others alone
    (:mod:`daemon.refusals`); retried whole, the report would wait for the retries to run out."""
    replies = "; ".join(f"{r.recipient}: {r.reply}" for r in refused)
    transient = [r for r in refused if not r.permanent]
    if relayed and transient and len(transient) < len(refused):
        fault = not all(r.about_this_mail for r in transient)
        return ChannelError(
            f"recipients refused, some for now: {replies}",
            permanent=True,
            service_fault=fault,
            refused=refused,
        )
    if transient and all(r.about_this_mail for r in transient):
        # a full or busy mailbox, too many recipients: kept trying, but the provider is working
        return ChannelError(f"recipients refused for now: {replies}", refused=refused, later=True)
    if transient:
        return response_error(transient[0].code, f"recipients refused ({replies})", refused)
    return ChannelError(f"all recipients refused: {replies}", permanent=True, refused=refused)


def detail_of(reply: str, refused: tuple[Refusal, ...]) -> str:
    # aiosmtplib hands back the text of the reply to the end of DATA, which is 250 when it returns.
    final = f"250 {reply}"
    if not refused:
        return final
    names = ", ".join(f"{r.recipient} ({r.code} {r.text})" for r in refused)
    return f"{final}; refused: {names}"
