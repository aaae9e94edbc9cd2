"""The SMTP smart host: applications point their mail relay here instead of at the provider.

aiosmtpd serves the protocol inside the daemon's own event loop (``loop.create_server``, not
aiosmtpd's ``Controller``, which runs a loop in a thread), so sessions await the same
:class:`~daemon.intake.accept.Acceptor` as the HTTP intake. Each message becomes one notification;
the client gets ``250`` only after the store has committed it, ``451`` with nothing kept when it
cannot. Never an open relay: a client authenticates (AUTH PLAIN/LOGIN, over STARTTLS unless
plaintext is allowed on loopback) or connects from an allowed network; the submission listener
(RFC 6409) always wants AUTH. This module holds the listeners and counts their sessions; a session
is :mod:`daemon.intake.smtp_session`; who may send what, and what a message becomes, is
:mod:`daemon.intake.smtp_policy` (aiosmtpd's handler).

While the store's health (:mod:`daemon.store_health`) says it cannot commit, MAIL FROM is answered
``451 4.3.0`` already, as Postfix refuses MAIL FROM while its queue is short of space: no client
transmits a large message only to be told to retry (why not Postfix's 452 4.3.1:
:data:`~daemon.intake.smtp_policy.STORE_UNAVAILABLE`). The store is asked after who may send and
the sender's syntax are checked, so a client that may not send learns nothing of it; the session
goes on (RSET, QUIT, MAIL again). Asking costs nothing while the store works (no probe, no wait);
once it failed, the verdict may wait up to :data:`~daemon.store_health.ANSWER_WITHIN_S` for a
commit probe, which is how MAIL finds the store committing again.

MAIL FROM's ``AUTH=`` parameter (RFC 4954) is taken and ignored. Replies: 530 (authenticate
first), 535 (bad credentials, unknown user alike), 550 5.7.1 (recipient outside the allowed
domains), 552 5.3.4 (too big), 501 (syntax), 451 4.3.0 (store unavailable: to MAIL FROM while the
store is known to fail, to DATA when the commit fails anyway), 421 (draining).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import time
from dataclasses import dataclass

from daemon.api.serving import bind
from daemon.intake.accept import Acceptor
from daemon.intake.smtp_config import SmtpIntakeConfig, SmtpTls
from daemon.intake.smtp_policy import SmtpPolicy
from daemon.intake.smtp_session import _Session
from daemon.listeners import close_servers

log = logging.getLogger(__name__)


#: at most one warning a minute about connections turned away
TOO_MANY_LOG_S = 60.0
#: connections the kernel queues before the loop accepts them: asyncio's default of 100 drops a
#: burst's connections past it, and an SMTP client whose connect went through then waits for a
#: greeting until its own timeout (minutes)
BACKLOG = 1024
#: per session: a few AUTH attempts (then 421: slows password guessing), the rest practically unlimited
CALL_LIMITS = {"AUTH": 3, "*": 100_000}


@dataclass(frozen=True, slots=True)
class _Listener:
    name: str
    host: str
    port: int
    #: submission semantics (RFC 6409 section 4.3): no mail without AUTH, whatever the network
    auth_required: bool


class SmtpIntake:
    """The listeners and their sessions: ``await start()``, ``port``, ``await stop()``."""

    def __init__(self, config: SmtpIntakeConfig, acceptor: Acceptor) -> None:
        self.config = config
        self.policy = SmtpPolicy(config, acceptor)
        self.draining = False
        self._hostname = config.greeting_name
        self._tls: ssl.SSLContext | None = None
        self._servers: dict[str, asyncio.Server] = {}
        self._ports: dict[str, int] = {}
        self._sessions: set[_Session] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._turned_away = 0
        self._warned_at = float("-inf")

    async def start(self) -> None:
        """Bind the listeners; sessions are served from then on."""
        self._tls = None if self.config.tls is None else _tls_context(self.config.tls)
        bound: list[tuple[_Listener, socket.socket]] = []
        try:
            for listener in self._listeners():
                bound.append((listener, bind(listener.host, listener.port)))
        except OSError:
            for _, sock in bound:
                sock.close()
            raise
        for listener, sock in bound:
            self._servers[listener.name] = await asyncio.get_running_loop().create_server(
                functools.partial(self._session, listener), sock=sock, backlog=BACKLOG
            )
            port = self._ports[listener.name] = sock.getsockname()[1]
            fields = {"event": "smtp.listening", "listener": listener.name, "port": port}
            log.info("SMTP intake (%s) on %s:%s", listener.name, listener.host, port, extra=fields)

    def reload(self, config: SmtpIntakeConfig) -> list[str]:
        """SIGHUP: users, networks, recipient domains, rules and labels apply from the next command
        of every session, the TLS certificate, limits and greeting name to sessions opened from now;
        returns the fields that change only with a restart (the listeners, delivery reports).
        Raises OSError or ssl.SSLError, with nothing changed, when the certificate cannot be read."""
        tls = None if config.tls is None else _tls_context(config.tls)
        old = self.config
        restart = ["listen", "submission_listen", "bounces", "bounce_from"]
        if config.hostname != old.hostname:
            restart.append("hostname")  # it signs delivery reports, built at the start
        self.policy.adopt(config)
        self.config, self._tls, self._hostname = config, tls, config.greeting_name
        return [f for f in restart if getattr(config, f) != getattr(old, f)]

    def _listeners(self) -> list[_Listener]:
        listeners = [_Listener("smtp", *self.config.address, auth_required=False)]
        if (submission := self.config.submission_address) is not None:
            listeners.append(_Listener("submission", *submission, auth_required=True))
        return listeners

    @property
    def port(self) -> int:
        """The bound port of the main listener (useful when the configuration says port 0)."""
        return self._ports["smtp"]

    @property
    def submission_port(self) -> int | None:
        return self._ports.get("submission")

    @property
    def committing(self) -> int:
        """Sessions waiting for the store to commit their message."""
        return sum(s.committing for s in self._sessions)

    def _session(self, listener: _Listener) -> _Session:
        return _Session(
            self,
            listener,
            self.policy,
            data_size_limit=self.config.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,  # keeps the bytes as received, and advertises 8BITMIME
            hostname=self._hostname,
            ident="backchannel",
            tls_context=self._tls,
            require_starttls=self.config.tls is not None and self.config.tls.required,
            timeout=self.config.idle_timeout.total_seconds(),
            command_call_limit=CALL_LIMITS,
            loop=asyncio.get_running_loop(),
        )

    def opened(self, session: _Session) -> None:
        self._sessions.add(session)
        self._idle.clear()

    def too_many(self, session: _Session) -> bool:
        """Whether ``session`` (already counted) is past the caps: all sessions, or its address's
        (outside the allowed networks)."""
        config = self.config
        if len(self._sessions) > config.max_sessions:
            return self._turn_away(session)
        if session.peer_ip in self.policy.networks:
            return False
        same = sum(1 for s in self._sessions if s.peer_ip == session.peer_ip)
        return same > config.max_sessions_per_client and self._turn_away(session)

    def _turn_away(self, session: _Session) -> bool:
        self._turned_away += 1
        now = time.monotonic()
        if now - self._warned_at >= TOO_MANY_LOG_S:
            self._warned_at = now
            fields = {"event": "smtp.too_many", "count": self._turned_away, "peer": session.peer_ip}
            log.warning(
                "SMTP connections turned away with 421: %d so far (max_sessions %d, per client %d)",
                self._turned_away,
                self.config.max_sessions,
                self.config.max_sessions_per_client,
                extra=fields,
            )
        return True

    def closed(self, session: _Session) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            self._idle.set()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting; idle sessions get 421 now, one committing a message right after its reply."""
        self.draining = True
        await close_servers(self._servers.values())
        for session in list(self._sessions):
            if not session.committing:
                session.goodbye()
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            log.warning(
                "SMTP sessions still open after %ss; closing them", grace_s, extra={"event": "smtp.abort"}
            )
            for session in list(self._sessions):
                session.abort()
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()


def _tls_context(tls: SmtpTls) -> ssl.SSLContext:
    # Purpose.CLIENT_AUTH is the server side: no client certificate asked, no hostname check.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context
