"""What the SMTP and IMAP checks share: the verdicts on reaching the server and on an error
neither names, the certificate's expiry verdict, and one-line replies.

Both checks read the certificate TLS already verified the same way, so a mail server whose
certificate is about to expire is DEGRADED whichever protocol saw it first.
"""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.email_replies import LOCAL_ERRNOS
from daemon.core.model import CheckStatus

Verdict = tuple[CheckStatus, str]

_REPLY_MAX = 200


def reaching_verdict(stage: str, exc: BaseException, host: str, port: int) -> Verdict | None:
    """The verdict on a failure to reach the server (name, connection, TLS); None for any other.

    A name that does not resolve is UNKNOWN: our resolver may be the one failing, not the provider;
    so is an error that means no packet left this host (our network, not the provider).
    """
    if isinstance(exc, socket.gaierror):
        return CheckStatus.UNKNOWN, f"{stage}: cannot resolve {host} ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno in LOCAL_ERRNOS:
        return CheckStatus.UNKNOWN, f"{stage}: {exc.strerror} (no route from here to {host}:{port})"
    if isinstance(exc, ConnectionRefusedError):
        return CheckStatus.DOWN, f"{stage}: connection refused by {host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CheckStatus.DOWN, f"{stage}: TLS certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return CheckStatus.DOWN, f"{stage}: TLS handshake failed: {exc.reason or exc}"
    return None


def other_verdict(stage: str, exc: BaseException) -> Verdict:
    """DOWN, in the error's own words: for a failure no more specific verdict names."""
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return CheckStatus.DOWN, f"{stage}: {one_line(detail or type(exc).__name__)}"


def certificate_verdict(peer_cert: dict[str, Any] | None, now: datetime, warn_days: int) -> Verdict | None:
    """DEGRADED when the certificate TLS already accepted expires within ``warn_days``; else None.

    ``peer_cert`` is :meth:`ssl.SSLSocket.getpeercert`: empty when not verified (``verify_tls``
    off, so there is nothing trustworthy to read), None without TLS.
    """
    not_after = (peer_cert or {}).get("notAfter")
    if not isinstance(not_after, str) or warn_days <= 0:
        return None
    expires_at = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
    left = expires_at - now
    if left >= timedelta(days=warn_days):
        return None
    when = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return CheckStatus.DEGRADED, f"TLS certificate expires in {left.days} day(s), at {when}: renew it"


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _REPLY_MAX else line[: _REPLY_MAX - 1] + "…"
