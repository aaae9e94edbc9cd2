"""One blocking IMAP conversation: connect, TLS, LOGIN or XOAUTH2, SELECT, the caller's work, LOGOUT.

:class:`ImapSession` runs in a worker thread; :class:`~daemon.checks.imap.Mailbox` starts it and,
when the run's timeout fires, calls :meth:`ImapSession.wake` from the loop so a blocked read ends
at once. Every failure leaves it as a :class:`MailboxError` carrying the run's verdict.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import re
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

from daemon.checks._imap_verdicts import failure_verdict
from daemon.checks._mail import Verdict, certificate_verdict, one_line
from daemon.checks.oauth import xoauth2
from daemon.core.model import CheckStatus

T = TypeVar("T")
Security = Literal["tls", "starttls", "none"]
_OUTSIDE_ASCII = re.compile(r"[^ -~]+")


class MailboxError(Exception):
    """The IMAP session failed; ``status`` and ``reason`` are the run's verdict."""

    def __init__(self, status: CheckStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ImapProbeSettings:
    host: str
    username: str
    port: int = 993
    #: ``tls`` is implicit TLS (993, RFC 8314); ``starttls`` upgrades on 143; ``none`` is tests only
    security: Security = "tls"
    password: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    mailbox: str = "INBOX"
    cert_warn_days: int = 14


class ImapSession:
    """One blocking IMAP conversation, run in a worker thread; ``stage`` names the step in progress."""

    def __init__(self, settings: ImapProbeSettings, context: ssl.SSLContext, timeout_s: float) -> None:
        self.stage = "start"
        self.settings = settings
        self.certificate: Verdict | None = None
        self._context = context
        self._timeout_s = timeout_s
        self._imap: imaplib.IMAP4 | None = None
        #: known as soon as it is connected, before the greeting, so :meth:`wake` can always reach it
        self.sock: socket.socket | None = None

    @property
    def imap(self) -> imaplib.IMAP4:
        assert self._imap is not None, "open() first"
        return self._imap

    def run(self, token: str | None, work: Callable[[ImapSession], T]) -> T:
        """Open, SELECT, ``work``, LOGOUT; any failure as :class:`MailboxError`."""
        try:
            self._open(token)
            result = work(self)
            self.stage = "logout"
            self.imap.logout()
            return result
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(*failure_verdict(self.stage, exc, self.settings)) from exc
        finally:
            self._close()

    def command(self, stage: str, typ: str, data: Sequence[object]) -> Sequence[object]:
        """The data of an OK reply; a NO as :class:`MailboxError` naming ``stage``."""
        if typ != "OK":
            raise MailboxError(CheckStatus.DOWN, f"{stage}: {typ} {_text(data)}")
        return data

    def wake(self) -> None:
        """Shut the socket down, from the loop's thread: a read blocked in the worker ends at once."""
        sock = self._imap.sock if self._imap is not None else self.sock
        if sock is not None:
            # already closed by LOGOUT or by the server: then there is nothing left to wake
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def connect(self, host: str, port: int, timeout: float | None) -> socket.socket:
        """Resolve, then connect (stages of their own: a resolver that hangs is ours, not the
        provider's), as :func:`socket.create_connection` does; the first address's error if none takes."""
        self.stage = "resolve"
        addresses = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        self.stage = "connect"
        errors: list[OSError] = []
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                errors.append(exc)
                continue
            self.sock = sock
            return sock
        raise errors[0]

    def _close(self) -> None:
        """In the worker: close imaplib's reader too, or the socket outlives its close()."""
        if self._imap is not None:
            with contextlib.suppress(OSError):
                self._imap.file.close()
            self._imap.sock.close()
        if self.sock is not None:
            self.sock.close()

    def _open(self, token: str | None) -> None:
        settings = self.settings
        if settings.security == "tls":
            self._imap = _Imap4Tls(self, settings.host, settings.port, self._context, self._timeout_s)
        else:
            self._imap = _Imap4(self, settings.host, settings.port, timeout=self._timeout_s)
        if settings.security == "starttls":
            self.stage = "starttls"
            self._imap.starttls(self._context)
        if settings.security != "none":
            peer_cert = self._imap.sock.getpeercert()  # type: ignore[attr-defined]
            self.certificate = certificate_verdict(peer_cert, datetime.now(UTC), settings.cert_warn_days)
        self.stage = "auth"
        self._authenticate(self._imap, token)
        self.stage = "select"
        self.command("select", *self._imap.select(_quoted(settings.mailbox)))

    def _authenticate(self, imap: imaplib.IMAP4, token: str | None) -> None:
        user, password = self.settings.username, self.settings.password or ""
        if token is None and (user + password).isascii():
            imap.login(user, password)
            return
        if token is None:  # LOGIN's strings are ASCII; SASL PLAIN (RFC 4616) carries UTF-8
            imap.authenticate("PLAIN", lambda _challenge: f"\0{user}\0{password}".encode())
            return
        initial = xoauth2(self.settings.username, token)
        answers = iter([initial])
        # a refused token gets a continuation carrying a JSON error; the empty answer to it makes
        # the server send its tagged NO (https://developers.google.com/gmail/imap/xoauth2-protocol)
        imap.authenticate("XOAUTH2", lambda _challenge: next(answers, b""))


class _Imap4(imaplib.IMAP4):
    """imaplib reads the greeting inside its constructor; this hands the socket over before that."""

    def __init__(self, session: ImapSession, host: str, port: int, *, timeout: float) -> None:
        self._session = session
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = self._session.connect(self.host, self.port, timeout)
        self._session.stage = "greeting"
        return sock


class _Imap4Tls(imaplib.IMAP4_SSL):
    def __init__(
        self, session: ImapSession, host: str, port: int, context: ssl.SSLContext, timeout: float
    ) -> None:
        self._session = session
        super().__init__(host, port, ssl_context=context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = self._session.connect(self.host, self.port, timeout)
        self._session.stage = "tls handshake/greeting"
        self._session.sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        return self._session.sock


def _text(data: Sequence[object]) -> str:
    parts = [d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data if d]
    return one_line(" ".join(parts))


def _quoted(mailbox: str) -> str:
    """imaplib sends arguments as they are; a mailbox name with a space must be a quoted string."""
    name = _modified_utf7(mailbox)
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _modified_utf7(name: str) -> str:
    """``name`` as IMAP spells mailbox names (RFC 3501 §5.1.3): '&' as '&-', and each run of
    characters outside printable ASCII as '&', its UTF-16 in base64 (',' for '/'), '-'."""

    def wide(run: re.Match[str]) -> str:
        encoded = base64.b64encode(run.group().encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")
        return f"&{encoded.decode()}-"

    return _OUTSIDE_ASCII.sub(wide, name.replace("&", "&-"))
