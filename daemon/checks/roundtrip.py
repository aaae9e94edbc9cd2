"""The round-trip check: a tagged canary goes out through the provider's SMTP and must arrive over IMAP.

An SMTP port that answers proves little; mail that arrives proves mail flows. Each run:

1. sends a new canary through the provider's SMTP (the SMTP check's own conversation, so send
   failures read the same: refused, 4xx/5xx, TLS: DOWN; 535: CREDENTIALS; no DNS: UNKNOWN). The
   subject carries ``[backchannel canary] <check> <uuid4>`` and the header ``X-Backchannel-Canary``
   the same tag; ``Auto-Submitted: auto-generated`` keeps vacation responders quiet (RFC 3834);
2. opens the mailbox (the same one, or a control mailbox elsewhere) and polls it, about once a
   second, until the canary just sent appears or the run's time is spent;
3. deletes the canaries of this check it finds, and expunges them (``UID EXPUNGE`` with UIDPLUS,
   RFC 4315, so no other message marked deleted is touched): its own, and stale ones a crashed
   run or an earlier daemon left behind: a token this object never sent, dated twice
   ``fail_after`` or more ago (or not dated; twice, for the nodes' clocks may disagree). A younger
   one it did not send is another node's (with high availability every node runs the checks,
   against the same mailbox) and is left for that node to find: deleted as stale, it made that
   node's check read DOWN while mail flowed.

Why canaries outlive runs: a provider may take minutes to deliver, but a run must return within
its timeout or it blocks the scheduler. So the canaries not yet seen are kept in this object
(``outstanding``) and every run looks for all of them. The verdict, with ``warn_after`` (95 s)
and ``fail_after`` (300 s):

==============================================================  ==============================
what this run saw                                               status
==============================================================  ==============================
the canary sent last among those that arrived: took < warn      OK, latency_s is its round trip
... took ≥ warn_after / ≥ fail_after                            DEGRADED / DOWN
none arrived; the oldest outstanding is ≥ warn / ≥ fail         DEGRADED / DOWN
none arrived, none overdue (a canary in flight)                 UNKNOWN: no evidence either way
sending failed, or the mailbox could not be read                the SMTP or IMAP check's verdict
==============================================================  ==============================

A canary in flight is UNKNOWN, not OK, so recovery is only ever confirmed by mail that arrived.
When a canary arrives, older ones still outstanding are given up (lost in the outage) and named
in the reason; they are deleted if they turn up later. Arrival times are those of the poll that
saw the canary, so a canary seen by a later run is charged up to one interval more.

Several daemons may run the same round-trip check against one mailbox (the nodes of a
high-availability cluster do): each finds its own canaries and leaves the others' until they are
twice ``fail_after`` old.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid, parsedate_to_datetime
from typing import Literal

from pydantic import Field, model_validator

from daemon.checks.imap import ImapConfig, ImapSession, Mailbox, MailboxError
from daemon.checks.smtp import Conversation, SmtpCheck
from daemon.configbase import Duration, EmailAddress, Model, SmtpConfig
from daemon.core.model import CheckResult, CheckStatus

Verdict = tuple[CheckStatus, str]
SUBJECT_TAG = "[backchannel canary]"
HEADER = "X-Backchannel-Canary"
#: how often a run asks the mailbox for news while it waits
POLL_INTERVAL_S = 1.0
#: beyond this, the oldest canaries are forgotten: the ones left are overdue all the same
MAX_OUTSTANDING = 50
_UID = re.compile(rb"UID (\d+)")


class RoundtripCheckConfig(Model):
    type: Literal["roundtrip"]
    name: str | None = Field(None, pattern=r"^\S+$")
    every: Duration = timedelta(seconds=60)
    #: one run: the send, then waiting for the canary; a slower canary is looked for by later runs
    timeout: Duration = timedelta(seconds=30)
    #: where to send; the provider's own SMTP settings by default
    smtp: SmtpConfig | None = None
    #: the canary's sender; the provider's mail_from by default
    mail_from: EmailAddress | None = None
    #: the address whose mailbox ``imap`` reads
    to: EmailAddress
    imap: ImapConfig
    warn_after: Duration = timedelta(seconds=95)
    fail_after: Duration = timedelta(seconds=300)

    @model_validator(mode="after")
    def _ordered(self) -> RoundtripCheckConfig:
        if self.timeout >= self.every:
            raise ValueError("timeout must be shorter than every")
        if self.warn_after >= self.fail_after:
            raise ValueError("warn_after must be shorter than fail_after")
        return self


@dataclass(frozen=True, slots=True)
class Canary:
    token: str
    sent_s: float  # on the monotonic clock


@dataclass
class Sighting:
    """What one IMAP session found: tokens of this check with the monotonic time first seen."""

    seen: dict[str, float] = field(default_factory=dict)
    stale: int = 0


class RoundtripCheck:
    def __init__(
        self,
        name: str,
        smtp: SmtpCheck,
        mailbox: Mailbox,
        *,
        mail_from: str,
        to: str,
        timeout_s: float,
        warn_after_s: float = 95.0,
        fail_after_s: float = 300.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``smtp`` should have half of ``timeout_s`` as its own timeout; the mailbox gets the rest."""
        if not 0 < warn_after_s < fail_after_s:
            raise ValueError(f"check {name}: need 0 < warn_after < fail_after")
        self.name = name
        self.tag = "-".join(name.split())
        self.outstanding: list[Canary] = []
        #: every token sent lately, given up ones too: deleted whenever seen
        self._sent: deque[str] = deque(maxlen=2 * MAX_OUTSTANDING)
        self._smtp, self._mailbox = smtp, mailbox
        self._from, self._to = mail_from, to
        self._timeout_s = timeout_s
        self._warn_s, self._fail_s = warn_after_s, fail_after_s
        self._clock, self._monotonic = clock, monotonic

    async def run(self) -> CheckResult:
        started = self._monotonic()
        token = uuid.uuid4().hex
        status, reason = await self._smtp.session(lambda c: self._send(c, token))
        latency_s: float | None = None
        if status is not CheckStatus.OK:
            # the session names its stage; its own "send" (a refused recipient) is not said twice
            reason = reason if reason.startswith("send: ") else f"send: {reason}"
        else:
            self.outstanding = [*self.outstanding, Canary(token, self._monotonic())][-MAX_OUTSTANDING:]
            self._sent.append(token)
            status, reason, latency_s = await self._receive(started)
        reason = self._mailbox.redact(self._smtp.redact(reason))
        latency_s = self._monotonic() - started if latency_s is None else latency_s
        return CheckResult(self.name, status, reason, latency_s, self._clock())

    async def aclose(self) -> None:
        await self._smtp.aclose()
        await self._mailbox.aclose()

    async def _send(self, conversation: Conversation, token: str) -> Verdict:
        message = self._canary(token)
        await conversation.step("send", conversation.client.send_message(message))
        await conversation.step("quit", conversation.client.quit())
        return CheckStatus.OK, "sent"

    def _canary(self, token: str) -> EmailMessage:
        message = EmailMessage()
        message["From"], message["To"] = self._from, self._to
        message["Subject"] = f"{SUBJECT_TAG} {self.tag} {token}"
        message[HEADER] = f"{self.tag} {token}"
        message["Auto-Submitted"] = "auto-generated"
        message["Date"] = format_datetime(self._clock())
        message["Message-ID"] = make_msgid(idstring=token, domain="backchannel")
        message.set_content("backchannel checks that mail flows; this message deletes itself.\n")
        return message

    async def _receive(self, started: float) -> tuple[CheckStatus, str, float | None]:
        remaining_s = max(self._timeout_s - (self._monotonic() - started), 1.0)
        # leave time to delete, expunge and log out after the last poll
        poll_until = self._monotonic() + remaining_s - min(5.0, remaining_s * 0.3)
        wanted, ours = {c.token for c in self.outstanding}, set(self._sent)
        newest = self.outstanding[-1].token
        stale_before = self._stale_before()
        try:
            sighting = await self._mailbox.session(
                lambda s: _collect(
                    s, self.tag, wanted, ours, newest, poll_until, self._monotonic, stale_before
                ),
                timeout_s=remaining_s,
            )
        except MailboxError as exc:
            return exc.status, f"receive: {exc.reason}", None
        return self._verdict(sighting)

    def _stale_before(self) -> datetime:
        """A canary this object did not send, dated before this, is stale (no node waits for it)."""
        return self._clock() - timedelta(seconds=2 * self._fail_s)

    def _verdict(self, sighting: Sighting) -> tuple[CheckStatus, str, float | None]:
        arrived = [c for c in self.outstanding if c.token in sighting.seen]
        stale = f"; {sighting.stale} stale canary(ies) deleted" if sighting.stale else ""
        if arrived:
            last = arrived[-1]
            position = self.outstanding.index(last)
            lost = sum(1 for c in self.outstanding[:position] if c.token not in sighting.seen)
            self.outstanding = [c for c in self.outstanding[position + 1 :] if c.token not in sighting.seen]
            latency_s = sighting.seen[last.token] - last.sent_s
            given_up = f"; {lost} older canary(ies) never arrived" if lost else ""
            status = self._grade(latency_s)
            return status, f"canary arrived after {latency_s:.1f}s{given_up}{stale}", latency_s
        age_s = self._monotonic() - self.outstanding[0].sent_s
        waiting = f"{len(self.outstanding)} canary(ies) not arrived, the oldest sent {age_s:.0f}s ago{stale}"
        # Nothing arrived: not "degraded", which counts as working and so towards a recovery that
        # no mail confirmed (submission back, delivery still broken: declared healthy, then down
        # again at fail_after). Unknown until fail_after, down from then on.
        status = CheckStatus.DOWN if age_s >= self._fail_s else CheckStatus.UNKNOWN
        return status, waiting, None

    def _grade(self, seconds: float) -> CheckStatus:
        if seconds >= self._fail_s:
            return CheckStatus.DOWN
        return CheckStatus.DEGRADED if seconds >= self._warn_s else CheckStatus.OK


def _collect(
    session: ImapSession,
    tag: str,
    wanted: set[str],
    ours: set[str],
    newest: str,
    poll_until: float,
    monotonic: Callable[[], float],
    stale_before: datetime,
) -> Sighting:
    """In the worker thread: poll until ``newest`` is seen or time is up, then delete what was
    found of ``ours`` (``wanted`` are the ones still awaited), and the stale ones (sent before
    ``stale_before``, or undated)."""
    sighting, uids = Sighting(), set[bytes]()
    while True:
        session.command("noop", *session.imap.noop())
        for uid, found_tag, token, sent_at in _canaries(session):
            if found_tag != tag:
                continue  # another check's canary: not ours to judge
            if token in wanted:
                uids.add(uid)
                sighting.seen.setdefault(token, monotonic())
            elif token in ours or sent_at is None or sent_at < stale_before:
                uids.add(uid)  # ours given up, a crashed run's, an earlier daemon's, a gone node's
            # else: another node's, in flight: it looks for it itself
        if newest in sighting.seen or monotonic() + POLL_INTERVAL_S > poll_until:
            break
        time.sleep(POLL_INTERVAL_S)
    sighting.stale = len(uids) - len(sighting.seen)
    _delete(session, sorted(uids, key=int))
    return sighting


def _canaries(session: ImapSession) -> list[tuple[bytes, str, str, datetime | None]]:
    """(uid, check tag, token, sent at) of every canary in the mailbox, of any check."""
    imap = session.imap
    [found] = session.command("search", *imap.uid("SEARCH", "SUBJECT", f'"{SUBJECT_TAG}"'))
    if not isinstance(found, bytes) or not found.strip():
        return []
    uids = b",".join(found.split()).decode()
    fields = f"(UID BODY.PEEK[HEADER.FIELDS ({HEADER} DATE)])"
    data = session.command("fetch", *imap.uid("FETCH", uids, fields))
    return [canary for item in data if (canary := _parse(item)) is not None]


def _parse(item: object) -> tuple[bytes, str, str, datetime | None] | None:
    """One FETCH item, ``(b'7 (UID 12 BODY[...] {n}', b'X-Backchannel-Canary: tag token\\r\\n...')``."""
    if not isinstance(item, tuple) or len(item) != 2:
        return None
    prefix, header_bytes = item
    uid = _UID.search(prefix) if isinstance(prefix, bytes) else None
    if uid is None or not isinstance(header_bytes, bytes):
        return None
    # decoded: a check's name outside ASCII is sent as RFC 2047 encoded words
    headers = BytesHeaderParser(policy=default_policy).parsebytes(header_bytes)
    parts = str(headers.get(HEADER, "")).split()
    return (uid.group(1), parts[0], parts[1], _date(headers.get("Date"))) if len(parts) == 2 else None


def _date(value: object) -> datetime | None:
    """A canary's Date, aware; None when missing or unreadable (such a canary is stale)."""
    try:
        when = parsedate_to_datetime(str(value)) if value else None
    except (TypeError, ValueError):
        return None
    return None if when is None or when.tzinfo is None else when


def _delete(session: ImapSession, uids: Sequence[bytes]) -> None:
    if not uids:
        return
    imap = session.imap
    uid_set = b",".join(uids).decode()
    session.command("delete", *imap.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)"))
    [capabilities] = session.command("capability", *imap.capability())
    if isinstance(capabilities, bytes) and b"UIDPLUS" in capabilities.upper().split():
        session.command("expunge", *imap.uid("EXPUNGE", uid_set))
    else:
        # without UIDPLUS, EXPUNGE also removes other messages marked deleted: use a canary-only mailbox
        session.command("expunge", *imap.expunge())
