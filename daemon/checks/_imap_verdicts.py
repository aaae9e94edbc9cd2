"""How an IMAP session's failure reads: a refusing reply or a socket error as a verdict.

The outcomes are tabled in :mod:`daemon.checks.imap`; ``stage`` is the step the session had
reached, and names the reason.
"""

from __future__ import annotations

import imaplib
import re
from typing import TYPE_CHECKING

from daemon.checks._mail import Verdict, one_line, other_verdict, reaching_verdict
from daemon.core.model import CheckStatus

if TYPE_CHECKING:  # the session raises through these verdicts, so its module imports this one
    from daemon.checks._imap_session import ImapProbeSettings

#: response codes to LOGIN/AUTHENTICATE that say the server, not our credentials, is the trouble
_SERVER_CODES = frozenset({"UNAVAILABLE", "PRIVACYREQUIRED", "SERVERBUG"})
_CODE = re.compile(r"\[([A-Z-]+)")


def failure_verdict(stage: str, exc: BaseException, settings: ImapProbeSettings) -> Verdict:
    where = f"{settings.host}:{settings.port}"
    if (reaching := reaching_verdict(stage, exc, settings.host, settings.port)) is not None:
        return reaching
    if isinstance(exc, TimeoutError):
        return CheckStatus.DOWN, f"{stage}: no answer from {where} within the socket timeout"
    if isinstance(exc, imaplib.IMAP4.abort):
        return CheckStatus.DOWN, f"{stage}: {one_line(str(exc))}"
    if isinstance(exc, imaplib.IMAP4.error):
        return reply_verdict(stage, _message(exc))
    return other_verdict(stage, exc)


def reply_verdict(stage: str, message: str) -> Verdict:
    """imaplib raises NO and BAD replies as IMAP4.error; a BAD names itself as a command error."""
    reply = f"{stage}: {one_line(message)}"
    code = _CODE.search(message)
    bad = "command error: BAD" in message
    if stage == "auth" and not bad and (code is None or code.group(1) not in _SERVER_CODES):
        return CheckStatus.CREDENTIALS, f"{reply} (authentication failed: credentials need renewing)"
    return CheckStatus.DOWN, reply


def _message(exc: imaplib.IMAP4.error) -> str:
    """imaplib raises a NO with the server's bytes as the argument, other errors with text."""
    arg = exc.args[0] if exc.args else ""
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
