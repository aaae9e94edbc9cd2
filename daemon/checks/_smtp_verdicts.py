"""How an SMTP check's failure reads: a refusing reply, a timeout or a socket error as a verdict.

The outcomes are tabled in :mod:`daemon.checks.smtp`; ``stage`` is the step the conversation had
reached, and names the reason.
"""

from __future__ import annotations

import aiosmtplib

from channels.email import SmtpSettings
from daemon.checks._mail import Verdict, one_line, other_verdict, reaching_verdict
from daemon.core.model import CheckStatus

_AUTH_CODES = frozenset({530, 534, 535})


def reply_verdict(stage: str, code: int, message: str) -> Verdict:
    reply = f"{stage}: {code} {one_line(message)}"
    if stage == "auth" and code in _AUTH_CODES:
        return CheckStatus.CREDENTIALS, f"{reply} (authentication failed: credentials need renewing)"
    if 400 <= code < 500:
        return CheckStatus.DOWN, f"{reply} (temporary 4xx)"
    if 500 <= code < 600:
        return CheckStatus.DOWN, f"{reply} (permanent 5xx)"
    return CheckStatus.DOWN, f"{reply} (unexpected reply)"


#: the stage while the OAuth2 token is fetched (from the identity provider, not the mail provider)
TOKEN_STAGE = "token"  # noqa: S105  (a stage's name)


def timeout_verdict(stage: str, timeout_s: float) -> Verdict:
    reason = f"timed out after {timeout_s:g}s at stage {stage}"
    if stage in ("local hostname", "resolve"):
        return CheckStatus.UNKNOWN, f"{reason} (our resolver is not answering)"
    if stage == TOKEN_STAGE:  # the identity provider (or our way to it), as when it cannot be reached
        return CheckStatus.UNKNOWN, f"{reason} (the OAuth2 token endpoint is not answering)"
    return CheckStatus.DOWN, reason


def failure_verdict(stage: str, exc: BaseException, settings: SmtpSettings) -> Verdict:
    cause = _root_cause(exc)
    if (reaching := reaching_verdict(stage, cause, settings.host, settings.port)) is not None:
        return reaching
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return CheckStatus.DOWN, f"{stage}: connection closed by the server"
    return other_verdict(stage, cause)


def _root_cause(exc: BaseException) -> BaseException:
    """aiosmtplib wraps socket errors (``raise SMTPConnectError(...) from exc``); the cause says more."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc
