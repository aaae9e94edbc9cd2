"""One SMTP smart-host session: aiosmtpd's protocol, with what our clients need of it.

Draining (421 to a session left idle), a cap on the sessions per client (421 before the greeting),
any bytes restarting the idle timeout, aiosmtpd's 552 replies given their enhanced code, MAIL
FROM's ``AUTH=`` parameter taken off and ignored, AUTH mechanism names compared case-insensitively,
long lines and bare LF line ends accepted, and AUTH PLAIN/LOGIN credentials checked in a thread
(scrypt must not run on the loop). The listeners that make sessions are
:class:`~daemon.intake.smtp.SmtpIntake`'s; what a session's commands decide is
:mod:`daemon.intake.smtp_policy`'s (aiosmtpd's handler).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, syntax

from daemon.intake.smtp_auth import AuthenticationFailed, is_loopback
from daemon.intake.smtp_policy import LINE_MAX, SmtpPolicy, peer_of

if TYPE_CHECKING:
    from daemon.intake.smtp import SmtpIntake, _Listener

log = logging.getLogger("daemon.intake.smtp")


GOODBYE = b"421 4.3.2 Service shutting down, try again later\r\n"
#: RFC 4954's MAIL FROM parameter naming the submitter (xtext, so no spaces)
_AUTH_PARAMETER = re.compile(r"[ \t]+AUTH=[^ \t]*", re.IGNORECASE)
TOO_MANY = b"421 4.7.0 Too many connections, try again later\r\n"
#: RFC 3463's code for a message over the size limit, which aiosmtpd's own 552 replies (to MAIL
#: with SIZE=, and at the end of DATA) lack: a client files a reply with it as "too big", not as
#: a generic 5xx (https://www.rfc-editor.org/rfc/rfc3463#section-3.4)
TOO_BIG = "552 5.3.4 Message too big for system"


def _path_end(arg: str) -> int:
    """Where MAIL's reverse-path ends in ``FROM:<path> params`` (or a bare ``FROM:path params``,
    which aiosmtpd also takes): its parameters follow."""
    start = arg.find(":") + 1
    while start < len(arg) and arg[start] in " \t":
        start += 1
    if arg.startswith("<", start):
        close = arg.find(">", start)
        return len(arg) if close < 0 else close + 1
    return next((i for i in range(start, len(arg)) if arg[i] in " \t"), len(arg))


class _Session(SMTP):
    """One client connection: aiosmtpd's protocol plus draining and AUTH checked off the loop."""

    line_length_limit = LINE_MAX

    def __init__(self, intake: SmtpIntake, listener: _Listener, policy: SmtpPolicy, **kwargs: Any) -> None:
        super().__init__(policy, **kwargs)
        self.intake = intake
        self.listener = listener
        self.committing = False
        self._pending_login: LoginPassword | None = None
        self._registered = False
        self.peer_ip = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._registered:  # called again with the TLS transport after STARTTLS
            super().connection_made(transport)
            return
        self._registered = True
        self.intake.opened(self)
        peer = transport.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if self.intake.config.allow_plaintext_auth_on_loopback and peer and is_loopback(peer[0]):
            # aiosmtpd has one switch per server for AUTH over plaintext; ours depends on the peer
            self._auth_require_tls = False
        super().connection_made(transport)
        if self.intake.draining:
            self.goodbye()
        elif self.intake.too_many(self):
            self.goodbye(TOO_MANY)  # written before the greeting's task runs: the 421 comes first

    def connection_lost(self, error: Exception | None) -> None:
        self.intake.closed(self)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        """Any bytes from the client restart ``idle_timeout`` (aiosmtpd restarts it per command
        only, which cut off a slow client still sending a large message's DATA)."""
        if self._timeout_handle is not None:
            self._reset_timeout()
        super().data_received(data)

    def goodbye(self, reply: bytes = GOODBYE) -> None:
        """RFC 5321 section 3.8: a server shutting down answers 421 and closes."""
        if isinstance(self.transport, asyncio.WriteTransport) and not self.transport.is_closing():
            self.transport.write(reply)
            self.transport.close()

    def abort(self) -> None:
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.abort()

    async def push(self, status: AnyStr) -> None:
        """Every reply goes through here: aiosmtpd's own 552s get their enhanced code (TOO_BIG)."""
        if isinstance(status, str) and status.startswith("552 Error:"):
            await super().push(TOO_BIG)
        else:
            await super().push(status)

    async def smtp_MAIL(self, arg: str | None) -> None:
        """RFC 4954 section 5: MAIL FROM may carry ``AUTH=<mailbox>`` or ``AUTH=<>``, the message's
        submitter as the client knows it (Exim sends one on every authenticated connection); a
        server advertising AUTH must take it. aiosmtpd refuses every parameter it does not know
        (555), so it is taken off here and ignored: the session's own login is what counts."""
        if arg:
            end = _path_end(arg)
            arg = arg[:end] + _AUTH_PARAMETER.sub("", arg[end:])
        await super().smtp_MAIL(arg)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """RFC 4954 section 4: mechanism names are case-insensitive. .NET's SmtpClient (PowerShell's
        Send-MailMessage, SQL Server Database Mail) sends ``AUTH login``, and aiosmtpd compares the
        name as sent (504); the initial response after it is base64, left as it is."""
        if arg:
            mechanism, *response = arg.split(maxsplit=1)
            arg = " ".join([mechanism.upper(), *response])
        await super().smtp_AUTH(arg)

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd reads a message in lines that CRLF ends (so a bare LF cannot end it: no SMTP
        smuggling), which makes a message with bare LF line ends, as Python's
        ``sendmail(msg.as_bytes())`` sends it, one line: refused (500) past LINE_MAX however short
        its lines, and its dots after a bare LF left doubled. While DATA is read, the line limit is
        the message's; the policy then reads the lines at LF, as Postfix does
        (:func:`~daemon.intake.smtp_policy.lines_at_lf`)."""
        self._line_limit((self.data_size_limit or 0) + LINE_MAX)
        try:
            await super().smtp_DATA(arg)
        finally:
            self._line_limit(LINE_MAX)
        if self.intake.draining:
            self.goodbye()

    def _line_limit(self, limit: int) -> None:
        # aiosmtpd checks a line against line_length_limit, and its StreamReader (made with that
        # limit) refuses a longer one; CPython keeps the reader's in _limit, with no setter
        self.line_length_limit = self._reader._limit = limit  # type: ignore[attr-defined]

    # aiosmtpd's AUTH PLAIN/LOGIN decode the exchange and call the synchronous _authenticate();
    # scrypt must not run on the loop, so _authenticate() only keeps the credentials and the
    # overrides below check them in a thread.
    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        self._pending_login = auth_data if isinstance(auth_data, LoginPassword) else None
        return AuthResult(success=False, handled=False)

    async def auth_PLAIN(self, _: object, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: object, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_LOGIN(_, args))

    async def _verified(self, decoded: AuthResult) -> AuthResult:
        login, self._pending_login = self._pending_login, None
        if login is None:  # the exchange itself failed and aiosmtpd has answered it
            return decoded
        try:
            name = await self.intake.policy.credentials.authenticate(login.login, login.password)
        except AuthenticationFailed:
            failed = {"event": "smtp.auth_failed", "peer": peer_of(self.session)}
            log.warning("SMTP AUTH failed", extra=failed)
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=name)
