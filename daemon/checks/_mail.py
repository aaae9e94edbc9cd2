"""What the SMTP and IMAP checks share: the certificate's expiry verdict and one-line replies.

Both checks read the certificate TLS already verified the same way, so a mail server whose
certificate is about to expire is DEGRADED whichever protocol saw it first.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.core.model import CheckStatus

Verdict = tuple[CheckStatus, str]

_REPLY_MAX = 200


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
