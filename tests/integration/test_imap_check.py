"""The IMAP check against a scriptable IMAP server on 127.0.0.1: one test per outcome.

The stand-in below speaks just enough IMAP4rev1 (RFC 3501) for the check: greeting, CAPABILITY,
STARTTLS, LOGIN, AUTHENTICATE XOAUTH2, SELECT, NOOP, LOGOUT; a real Dovecot is exercised by
``tests/e2e``. What a real server will not do on demand (greet with BYE, never greet, refuse
with a given response code) is what the script is for.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
import trustme

from daemon.checks.base import Check
from daemon.checks.imap import ImapCheck, ImapProbeSettings, Security
from daemon.checks.oauth import TokenSource
from daemon.configbase import OAuth2Config
from daemon.core.model import CheckResult, CheckStatus
from tests.integration.smtp_check_server import HOST, refusing_port
from tests.integration.status_server import StatusServer, json_reply

USER, PASSWORD = "probe@example.test", "imap-Pa55-word"
TIMEOUT_S = 5.0


@dataclass
class ImapScript:
    greeting: str = "* OK [CAPABILITY IMAP4rev1] stand-in ready"
    silent: bool = False
    #: the tagged reply to a wrong LOGIN
    refuse: str = "NO [AUTHENTICATIONFAILED] Authentication failed."
    select: str = "OK [READ-WRITE] SELECT completed"
    password: str = PASSWORD
    tokens: set[str] = field(default_factory=set)


class ImapStandIn:
    def __init__(self, *, tls: str = "starttls", cert: trustme.LeafCert | None = None) -> None:
        self.script = ImapScript()
        self.bearer_tokens: list[str] = []
        #: each SELECT's argument, as sent
        self.selected: list[str] = []
        self.port = 0
        self._tls = tls
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if cert is not None:
            cert.configure_cert(self._context)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.last_line = ""

    async def __aenter__(self) -> Self:
        implicit = self._context if self._tls == "implicit" else None
        self._server = await asyncio.start_server(self._serve, HOST, 0, ssl=implicit)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: Any, tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.script.silent:
                await reader.read()
                return
            await _say(writer, self.script.greeting)
            while not self.script.greeting.startswith("* BYE") and (line := await reader.readline()):
                self.last_line = line.decode().rstrip("\r\n")
                if not await self._answer(line.decode().split(), reader, writer):
                    break
        except (ConnectionError, ssl.SSLError):
            pass  # the client gave up: that is what some tests are about
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(
        self, words: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        tag, command = words[0], words[1].upper()
        if command == "CAPABILITY":
            starttls = " STARTTLS" if self._tls == "starttls" else ""
            await _say(writer, f"* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2{starttls}", f"{tag} OK done")
        elif command == "STARTTLS" and self._tls == "starttls":
            await _say(writer, f"{tag} OK Begin TLS negotiation now")
            await writer.start_tls(self._context)
        elif command == "LOGIN":
            good = [w.strip('"') for w in words[2:4]] == [USER, self.script.password]
            await _say(writer, f"{tag} {'OK Logged in' if good else self.script.refuse}")
        elif command == "AUTHENTICATE" and words[2].upper() == "PLAIN":
            await _say(writer, "+ ")
            good = base64.b64decode(await reader.readline()) == f"\0{USER}\0{self.script.password}".encode()
            await _say(writer, f"{tag} {'OK Logged in' if good else self.script.refuse}")
        elif command == "AUTHENTICATE":
            await self._xoauth2(tag, reader, writer)
        elif command == "SELECT":
            self.selected.append(self.last_line.split(" ", 2)[2])
            await _say(writer, "* 0 EXISTS", f"{tag} {self.script.select}")
        elif command == "LOGOUT":
            await _say(writer, "* BYE logging out", f"{tag} OK bye")
            return False
        else:
            await _say(writer, f"{tag} BAD unknown command")
        return True

    async def _xoauth2(self, tag: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _say(writer, "+ ")
        fields = base64.b64decode(await reader.readline()).decode().split("\x01")
        token = next((f.removeprefix("auth=Bearer ") for f in fields if f.startswith("auth=")), "")
        self.bearer_tokens.append(token)
        if token in self.script.tokens:
            await _say(writer, f"{tag} OK Authenticated")
            return
        error = base64.b64encode(b'{"status":"401","schemes":"bearer"}').decode()
        await _say(writer, f"+ {error}")
        await reader.readline()  # the client's empty answer, per the XOAUTH2 protocol
        await _say(writer, f"{tag} NO [AUTHENTICATIONFAILED] AUTHENTICATE failed.")


async def _say(writer: asyncio.StreamWriter, *lines: str) -> None:
    writer.write("".join(f"{line}\r\n" for line in lines).encode())
    await writer.drain()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert(HOST)


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def server(cert: trustme.LeafCert) -> AsyncIterator[ImapStandIn]:
    async with ImapStandIn(cert=cert) as server:
        yield server


async def probe(
    port: int, ca_file: str | None, *, security: Security = "starttls", password: str = PASSWORD,
    timeout_s: float = TIMEOUT_S, tokens: TokenSource | None = None, runs: int = 1, **overrides: Any,
) -> list[CheckResult]:  # fmt: skip
    settings = ImapProbeSettings(
        HOST, USER, port, security, None if tokens else password, ca_file=ca_file, **overrides
    )
    check = ImapCheck("imap", settings, timeout_s=timeout_s, token_source=tokens)
    try:
        return [await check.run() for _ in range(runs)]
    finally:
        await check.aclose()


def test_imap_check_is_a_check() -> None:
    """ImapCheck satisfies the Check protocol the scheduler runs."""
    assert isinstance(ImapCheck("imap", ImapProbeSettings(HOST, USER), timeout_s=1.0), Check)


async def test_starttls_login_select_is_ok(server: ImapStandIn, ca_file: str) -> None:
    """STARTTLS verified against the CA, LOGIN, SELECT INBOX and LOGOUT: OK, latency measured."""
    [result] = await probe(server.port, ca_file)
    assert result.status is CheckStatus.OK, result.reason
    assert result.reason == "ok: logged in, INBOX selected"
    assert 0 < result.latency_s < TIMEOUT_S


async def test_implicit_tls_is_ok(cert: trustme.LeafCert, ca_file: str) -> None:
    """Implicit TLS (port 993 style) is OK."""
    async with ImapStandIn(tls="implicit", cert=cert) as server:
        [result] = await probe(server.port, ca_file, security="tls")
    assert result.status is CheckStatus.OK, result.reason


async def test_authentication_failed_is_credentials(server: ImapStandIn, ca_file: str) -> None:
    """NO [AUTHENTICATIONFAILED] to LOGIN is CREDENTIALS, and the password stays out of the reason."""
    [result] = await probe(server.port, ca_file, password="wrong-Pa55")
    assert result.status is CheckStatus.CREDENTIALS
    assert result.reason.startswith("auth: [AUTHENTICATIONFAILED] Authentication failed.")
    assert "wrong-Pa55" not in result.reason


async def test_password_outside_ascii_logs_in_with_authenticate_plain(
    server: ImapStandIn, ca_file: str
) -> None:
    """LOGIN's quoted strings are ASCII (imaplib raised UnicodeEncodeError out of the run, so the
    check reported nothing, every run); SASL PLAIN (RFC 4616) carries UTF-8, as SMTP AUTH does."""
    server.script.password = "Pässwörd-ß"
    right = await probe(server.port, ca_file, password="Pässwörd-ß")
    wrong = await probe(server.port, ca_file, password="Pässwörd-x")
    assert right[0].status is CheckStatus.OK, right[0].reason
    assert wrong[0].status is CheckStatus.CREDENTIALS, wrong[0].reason
    assert "Pässwörd" not in wrong[0].reason


async def test_mailbox_outside_ascii_is_selected_in_modified_utf7(server: ImapStandIn, ca_file: str) -> None:
    """IMAP names mailboxes in modified UTF-7 (RFC 3501 §5.1.3): Exchange's German 'Gelöschte
    Elemente' raised UnicodeEncodeError out of the run, and a '&' was sent bare."""
    [result] = await probe(server.port, ca_file, mailbox="Gelöschte Elemente & 日本")
    assert result.status is CheckStatus.OK, result.reason
    assert server.selected == ['"Gel&APY-schte Elemente &- &ZeVnLA-"']


async def test_unavailable_at_login_is_down(server: ImapStandIn, ca_file: str) -> None:
    """NO [UNAVAILABLE] to LOGIN is the server's trouble (RFC 5530): DOWN, not CREDENTIALS."""
    server.script.refuse = "NO [UNAVAILABLE] Backend down"
    [result] = await probe(server.port, ca_file, password="any")
    assert result.status is CheckStatus.DOWN
    assert result.reason == "auth: [UNAVAILABLE] Backend down"


async def test_select_refused_is_down(server: ImapStandIn, ca_file: str) -> None:
    """A mailbox that cannot be selected is DOWN."""
    server.script.select = "NO [SERVERBUG] Internal error"
    [result] = await probe(server.port, ca_file)
    assert result.status is CheckStatus.DOWN
    assert result.reason == "select: NO [SERVERBUG] Internal error"


async def test_bye_greeting_is_down(server: ImapStandIn, ca_file: str) -> None:
    """A server that greets with BYE is DOWN."""
    server.script.greeting = "* BYE Too many connections"
    [result] = await probe(server.port, ca_file)
    assert result.status is CheckStatus.DOWN
    assert result.reason.startswith("greeting: ")
    assert "Too many connections" in result.reason


async def test_silent_server_times_out(server: ImapStandIn, ca_file: str) -> None:
    """A server that never greets is DOWN once the run's timeout passes, not the socket's later."""
    server.script.silent = True
    [result] = await probe(server.port, ca_file, timeout_s=0.5)
    assert result.status is CheckStatus.DOWN
    assert result.reason == "timed out after 0.5s at stage greeting"
    assert 0.45 <= result.latency_s < 3.0


async def test_hung_resolver_is_unknown_within_the_timeout(
    ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our resolver not answering says nothing about the provider: UNKNOWN, as the SMTP check has
    it. Resolving was part of stage connect, so it read DOWN and a silent greeting read the same."""
    answer, released = socket.getaddrinfo, threading.Event()

    def hung(host: object, *args: Any, **kwargs: Any) -> Any:
        if host == "resolver.hangs.test":
            released.wait(TIMEOUT_S)
        return answer(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hung)
    try:
        settings = ImapProbeSettings("resolver.hangs.test", USER, 993, "tls", PASSWORD, ca_file=ca_file)
        result = await ImapCheck("imap", settings, timeout_s=0.5).run()
    finally:
        released.set()
    assert result.status is CheckStatus.UNKNOWN, result.reason
    assert result.reason == "timed out after 0.5s at stage resolve (our resolver is not answering)"
    assert result.latency_s < 3.0


async def test_no_route_from_here_is_unknown(ca_file: str) -> None:
    """No packet left this host (ENETUNREACH; a multicast address has no unicast route): our
    network, UNKNOWN, as the SMTP check has it. It read DOWN."""
    settings = ImapProbeSettings("224.0.0.1", USER, 993, "tls", PASSWORD, ca_file=ca_file)
    result = await ImapCheck("imap", settings, timeout_s=TIMEOUT_S).run()
    assert result.status is CheckStatus.UNKNOWN, result.reason
    assert result.reason == "connect: Network is unreachable (no route from here to 224.0.0.1:993)"


async def test_refused_connection_is_down(ca_file: str) -> None:
    """A refused TCP connection is DOWN."""
    with refusing_port() as port:
        [result] = await probe(port, ca_file)
    assert result.status is CheckStatus.DOWN
    assert result.reason == f"connect: connection refused by {HOST}:{port}"


async def test_unresolvable_host_is_unknown(ca_file: str) -> None:
    """A name that does not resolve is most often our own network: UNKNOWN."""
    settings = ImapProbeSettings("no-such-host.invalid", USER, 993, "tls", PASSWORD, ca_file=ca_file)
    check = ImapCheck("imap", settings, timeout_s=TIMEOUT_S)
    result = await check.run()
    assert result.status is CheckStatus.UNKNOWN
    assert result.reason.startswith("resolve: cannot resolve no-such-host.invalid")


async def test_untrusted_certificate_is_down(server: ImapStandIn) -> None:
    """A certificate that does not verify is DOWN, saying why."""
    [result] = await probe(server.port, None)
    assert result.status is CheckStatus.DOWN
    assert result.reason.startswith("starttls: TLS certificate rejected: ")


async def test_starttls_not_offered_is_down(cert: trustme.LeafCert, ca_file: str) -> None:
    """A server that stops offering STARTTLS is DOWN: the password is never sent in the clear."""
    async with ImapStandIn(tls="none", cert=cert) as server:
        [result] = await probe(server.port, ca_file)
    assert result.status is CheckStatus.DOWN
    assert result.reason == "starttls: TLS not supported by server"


async def test_certificate_expiring_soon_is_degraded(ca: trustme.CA, ca_file: str) -> None:
    """A verified certificate with fewer than cert_warn_days left is DEGRADED."""
    soon = ca.issue_cert(HOST, not_after=datetime.now(UTC) + timedelta(days=3.5))
    async with ImapStandIn(cert=soon) as server:
        [result] = await probe(server.port, ca_file)
    assert result.status is CheckStatus.DEGRADED, result.reason
    assert result.reason.startswith("TLS certificate expires in 3 day(s)")


@pytest.fixture
async def token_server() -> AsyncIterator[StatusServer]:
    async with StatusServer() as server:
        yield server


def token_source(server: StatusServer) -> TokenSource:
    config = OAuth2Config(token_url=f"{server.url}/token", client_id="app", client_secret="imap-secret-1")
    return TokenSource(config)


def token_reply(value: str) -> Any:
    return json_reply({"token_type": "Bearer", "expires_in": 3599, "access_token": value})


async def test_xoauth2_is_ok_with_a_cached_token(
    server: ImapStandIn, ca_file: str, token_server: StatusServer
) -> None:
    """AUTHENTICATE XOAUTH2 with a client-credentials token; two runs, one token request."""
    token_server.serve("/token", token_reply("tok-1"))
    server.script.tokens.add("tok-1")
    results = await probe(server.port, ca_file, tokens=token_source(token_server), runs=2)
    assert [r.status for r in results] == [CheckStatus.OK] * 2, results[0].reason
    assert server.bearer_tokens == ["tok-1", "tok-1"]
    assert len(token_server.requests_to("/token")) == 1


async def test_refused_xoauth2_token_is_credentials_and_renewed(
    server: ImapStandIn, ca_file: str, token_server: StatusServer
) -> None:
    """A refused token is CREDENTIALS and leaves the cache: the next run presents a fresh one."""
    token_server.serve("/token", token_reply("tok-old"), token_reply("tok-new"))
    server.script.tokens.add("tok-new")
    first, second = await probe(server.port, ca_file, tokens=token_source(token_server), runs=2)
    assert first.status is CheckStatus.CREDENTIALS, first.reason
    assert first.reason.startswith("auth: [AUTHENTICATIONFAILED] AUTHENTICATE failed.")
    assert second.status is CheckStatus.OK, second.reason
    assert server.bearer_tokens == ["tok-old", "tok-new"]


async def test_token_endpoint_refusal_is_credentials(
    server: ImapStandIn, ca_file: str, token_server: StatusServer
) -> None:
    """The identity platform refusing the client is CREDENTIALS before any IMAP is spoken."""
    token_server.serve("/token", json_reply({"error": "unauthorized_client"}, status=401))
    [result] = await probe(server.port, ca_file, tokens=token_source(token_server))
    assert result.status is CheckStatus.CREDENTIALS
    assert result.reason.startswith("auth: OAuth2 token: token refused (unauthorized_client")
    assert server.bearer_tokens == []
