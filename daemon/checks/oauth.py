"""OAuth 2.0 access tokens for SMTP and IMAP (SASL XOAUTH2), by the client-credentials grant.

Microsoft 365 retired basic authentication for IMAP and, per tenant, for SMTP AUTH; an app
registration with the ``IMAP.AccessAsApp`` / ``SMTP.SendAsApp`` application permissions gets an
app-only token for the scope ``https://outlook.office365.com/.default``
(https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth#use-client-credentials-grant-flow-to-authenticate-smtp-imap-and-pop-connections).
The token goes into XOAUTH2 (https://developers.google.com/gmail/imap/xoauth2-protocol) with the
mailbox as ``user``. Google Workspace has no client-credentials grant for Gmail (a service account
signs a JWT instead): for Gmail, use an app password or a control mailbox elsewhere.

Why httpx and not msal: as for the Graph check (:mod:`daemon.checks.graph`), a client-secret grant
is one form POST, httpx is the daemon's HTTP stack, and the cache below is all msal would add.

A token is cached until :data:`TOKEN_MARGIN` before it expires. When the mail server refuses a
token, the check calls :meth:`TokenSource.invalidate` so the next run asks for a fresh one.

Exceptions::

    OAuthError (Exception)   no token: ``status`` is CREDENTIALS when the endpoint refused the
                             client (400/401), UNKNOWN when it could not be asked or answered oddly
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import httpx

from daemon.checks._http import StatusError, fetch, utc_now
from daemon.checks.graph import token_from
from daemon.configbase import OAuth2Config
from daemon.core.model import CheckStatus

#: refresh this long before the token's own expiry, so a run never presents one that lapses in flight
TOKEN_MARGIN = timedelta(minutes=2)


class OAuthError(Exception):
    """No access token could be obtained."""

    def __init__(self, reason: str, *, status: CheckStatus) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class TokenSource:
    """Client-credentials access tokens from one endpoint, cached until shortly before expiry."""

    def __init__(
        self,
        config: OAuth2Config,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._config = config
        self._url = config.endpoint()
        self._timeout_s = config.timeout.total_seconds()
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=self._timeout_s)
        self._clock = clock
        self._token: tuple[str, datetime] | None = None

    @property
    def secret(self) -> str:
        """For the checks' redaction: the client secret must never reach a reason."""
        return self._config.client_secret.get_secret_value()

    async def token(self) -> str:
        now = self._clock()
        if self._token is not None and now < self._token[1] - TOKEN_MARGIN:
            return self._token[0]
        form = {
            "grant_type": "client_credentials",
            "client_id": self._config.client_id,
            "client_secret": self.secret,
            "scope": self._config.scope,
        }
        try:
            fetched = await fetch(self._client, "POST", self._url, timeout_s=self._timeout_s, data=form)
            token = token_from(fetched, now)
        except StatusError as exc:
            raise OAuthError(f"OAuth2 token: {exc.reason}", status=exc.status) from exc
        self._token = (token.value, token.expires_at)
        return token.value

    def invalidate(self) -> None:
        """The server refused the cached token: the next :meth:`token` asks for a new one."""
        self._token = None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def xoauth2(user: str, token: str) -> bytes:
    """The XOAUTH2 initial response for imaplib, which base64-encodes it (aiosmtplib has its own)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
