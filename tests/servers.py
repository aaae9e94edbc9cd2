"""Stand-in servers on 127.0.0.1 for integration tests: an SMTP server and a webhook receiver.

Each runs its own event loop in a daemon thread, so it serves the same way under sync tests,
async tests, and code that blocks the test's loop. Behaviour is switched at runtime from the
test thread; what they received is read with ``wait_for(n)`` (sync) or ``await
wait_for_async(n)`` (async), both bounded by a deadline. Use them as context managers::

    with SmtpServer() as smtp:
        smtp.reply(421, "4.3.2 Try later", stage="rcpt")
        ...
        smtp.accept()
        [mail] = smtp.wait_for(1)

    with WebhookReceiver() as hook:
        hook.script(ScriptedResponse(status=503, headers={"Retry-After": "7"}))
        ...
        [request] = hook.wait_for(1)
"""

from __future__ import annotations

import asyncio
import http
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from daemon.listeners import close_servers

T = TypeVar("T")
Stage = Literal["connect", "mail", "rcpt", "data"]
HOST = "127.0.0.1"


class _Recorder(Generic[T]):
    """A thread-safe list that tests can wait on."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._cond = threading.Condition()

    def add(self, item: T) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def snapshot(self) -> list[T]:
        with self._cond:
            return list(self._items)

    def wait_for(self, n: int, timeout_s: float) -> list[T]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._items) >= n, timeout_s):
                raise TimeoutError(f"expected {n} items within {timeout_s}s, got {len(self._items)}")
            return list(self._items)

    async def wait_for_async(self, n: int, timeout_s: float) -> list[T]:
        deadline = time.monotonic() + timeout_s
        while len(items := self.snapshot()) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {n} items within {timeout_s}s, got {len(items)}")
            await asyncio.sleep(0.01)
        return items


class _LoopThread:
    """An event loop running in a daemon thread; coroutines are submitted from any thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        # The selector loop keeps its transports by weak reference: held here until close(), which
        # aborts whatever is still open, so none is left to the garbage collector (whose warning
        # would fail some later test). A transport asyncio never registered is out of its reach:
        # the one such case seen, a connection accepted as the server closed, is what
        # _ThreadedServer._shutdown's order prevents.
        registry = getattr(self.loop, "_transports", None)
        if registry is not None:
            self.loop._transports = dict(registry)  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, make: Callable[[], Coroutine[Any, Any, T]], timeout_s: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout_s)

    def close(self) -> None:
        self.call(_cancel_other_tasks)
        self.call(_abort_open_transports)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10.0)
        self.loop.close()
        getattr(self.loop, "_transports", {}).clear()


async def _cancel_other_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # A transport closed just now closes its socket in a callback of a later iteration: let those
    # run, or the loop stops first and the socket is left to the garbage collector (ResourceWarning).
    for _ in range(3):
        await asyncio.sleep(0)


async def _abort_open_transports() -> None:
    """Abort any socket transport of this loop still open (a client's, or one whose close waits on
    unsent data to a peer that stopped reading): left to the garbage collector, it would raise a
    ResourceWarning, an error under the suite's warning filter, in whichever test runs next."""
    loop = asyncio.get_running_loop()
    registry = getattr(loop, "_transports", None)  # the selector loop's fd -> transport (weak)
    if not registry:
        return
    for transport in list(registry.values()):
        if not transport.is_closing() or transport.get_write_buffer_size():
            transport.abort()
    for _ in range(100):  # the sockets close in callbacks of the next iterations
        if not _holding_sockets(registry):
            return
        await asyncio.sleep(0)
    # Still holding one (a close whose callback has not run yet): closed here, since the loop
    # that would run it stops next.
    for transport in _holding_sockets(registry):
        transport._sock.close()
        transport._sock = None


def _holding_sockets(registry: Any) -> list[Any]:
    """The selector transports of ``registry`` whose socket is still open."""
    return [t for t in list(registry.values()) if getattr(t, "_sock", None) is not None]


def _listening_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Lets start() rebind the port that stop() released while old connections sit in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    return sock


class _ThreadedServer:
    """Start/stop of one listening socket on a loop thread; stop() refuses until start() on the same port."""

    def __init__(self, name: str) -> None:
        self._thread = _LoopThread(name)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self.port = 0

    def _factory(self) -> asyncio.Protocol:
        raise NotImplementedError

    def start(self) -> None:
        if self._server is None:
            self._server = self._thread.call(self._listen)
            self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Close the listening socket and every open connection: the port now refuses."""
        if self._server is not None:
            self._thread.call(self._shutdown)
            self._server = None

    def close(self) -> None:
        self.stop()
        self._thread.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def _listen(self) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(
            self._factory, sock=_listening_socket(self.port)
        )

    async def _shutdown(self) -> None:
        assert self._server is not None
        # Stop accepting, let the connections already accepted get their transports, then close:
        # closed the other way round, asyncio (3.11) dropped such a connection's half-built
        # transport with its socket open, collected later as an "unclosed transport"
        # ResourceWarning in whichever test then ran (daemon/listeners.py,
        # tests/integration/test_stand_in_stop.py).
        await close_servers([self._server])
        for transport in list(self._transports):
            transport.close()
        # close() keeps a transport open until its buffer is sent: one to a peer that stopped
        # reading (a killed or stopped daemon) would stay open, be collected later unclosed, and
        # (Python 3.12+) keep wait_closed() waiting
        for transport in list(self._transports):
            if transport.get_write_buffer_size():  # type: ignore[attr-defined]
                transport.abort()  # type: ignore[attr-defined]
        await self._server.wait_closed()
        await _cancel_other_tasks()
        for transport in list(self._transports):  # opened by a handler meanwhile: none should be
            transport.abort()  # type: ignore[attr-defined]
        for _ in range(3):
            await asyncio.sleep(0)

    def _track(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)


# --- SMTP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    #: the DATA payload as received (dot-unstuffed, CRLF line endings)
    data: bytes
    #: the AUTH login used, if any
    login: str | None
    #: MAIL FROM's parameters (SMTPUTF8, BODY=8BITMIME, SIZE=...)
    mail_options: tuple[str, ...] = ()


class _Greeter(asyncio.Protocol):
    """Answers the connection with a fixed reply and hangs up (a 421/554 greeting)."""

    def __init__(self, reply: str) -> None:
        self._reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(f"{self._reply}\r\n".encode())
        transport.close()


class _TrackedSMTP(SMTP):
    def __init__(self, owner: SmtpServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._transports.add(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._transports.discard(self.transport)
        super().connection_lost(exc)


class SmtpServer(_ThreadedServer):
    """An SMTP server whose answers tests switch at runtime. Accepts everything by default."""

    def __init__(self) -> None:
        super().__init__("smtp-test-server")
        self.received: _Recorder[ReceivedMail] = _Recorder()
        self._lock = threading.Lock()
        self._replies: dict[Stage, str] = {}
        self._refused: dict[str, str | bytes] = {}
        #: how many more times each refusal applies (absent: until accept())
        self._refusals_left: dict[str, int] = {}
        self._recipient_limit: tuple[int, str] | None = None
        self._content_refusals: dict[bytes, str] = {}
        #: every RCPT TO address tried, in order, whatever the answer
        self.rcpt_attempts: _Recorder[str] = _Recorder()
        self._credentials: tuple[str, str] | None = None
        self._smtputf8 = True

    @property
    def messages(self) -> list[ReceivedMail]:
        return self.received.snapshot()

    def accept(self) -> None:
        """Back to accepting every message (scripted replies and refusals cleared, auth kept)."""
        with self._lock:
            self._replies.clear()
            self._refused.clear()
            self._refusals_left.clear()
            self._recipient_limit = None
            self._content_refusals.clear()

    def reply(self, code: int, text: str, *, stage: Stage = "rcpt") -> None:
        """Answer ``stage`` (the greeting, MAIL FROM, every RCPT TO, or DATA) with this reply."""
        with self._lock:
            self._replies[stage] = f"{code} {text}"

    def refuse(
        self,
        *addresses: str,
        code: int = 550,
        text: str | bytes = "5.1.1 No such user",
        times: int | None = None,
    ) -> None:
        """Refuse RCPT TO for these addresses only (the next ``times`` times, or until accept());
        ``text`` as bytes goes on the wire as it is (a reply that is not UTF-8)."""
        reply = f"{code} {text}" if isinstance(text, str) else f"{code} ".encode() + text
        with self._lock:
            self._refused.update({a.lower(): reply for a in addresses})
            if times is not None:
                self._refusals_left.update({a.lower(): times for a in addresses})

    def limit_recipients(self, limit: int, code: int = 452, text: str = "4.5.3 Too many recipients") -> None:
        """Take at most ``limit`` recipients per transaction; refuse the rest (as Exchange Online does)."""
        with self._lock:
            self._recipient_limit = (limit, f"{code} {text}")

    def refuse_content(self, needle: bytes, code: int = 554, text: str = "5.7.1 Message rejected") -> None:
        """Refuse, at the end of DATA, the messages that contain ``needle``."""
        with self._lock:
            self._content_refusals[needle] = f"{code} {text}"

    def _refusal(self, address: str, taken: int) -> str | bytes | None:
        with self._lock:
            key = address.lower()
            refusal = self._refused.get(key)
            if refusal is not None and key in self._refusals_left:
                self._refusals_left[key] -= 1
                if self._refusals_left[key] <= 0:
                    del self._refusals_left[key], self._refused[key]
            if refusal is None and self._recipient_limit is not None and taken >= self._recipient_limit[0]:
                refusal = self._recipient_limit[1]
            return refusal

    def _content_refusal(self, data: bytes) -> str | None:
        with self._lock:
            return next((r for needle, r in self._content_refusals.items() if needle in data), None)

    def require_auth(self, username: str, password: str) -> None:
        """From the next connection: advertise AUTH PLAIN/LOGIN without TLS and demand it before MAIL."""
        with self._lock:
            self._credentials = (username, password)

    def without_smtputf8(self) -> None:
        """From the next connection: no SMTPUTF8 in EHLO (it is advertised by default, as providers do)."""
        with self._lock:
            self._smtputf8 = False

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[ReceivedMail]:
        return self.received.wait_for(n, timeout_s)

    async def wait_for_async(self, n: int, timeout_s: float = 10.0) -> list[ReceivedMail]:
        return await self.received.wait_for_async(n, timeout_s)

    def _scripted(self, stage: Stage) -> str | None:
        with self._lock:
            return self._replies.get(stage)

    def _factory(self) -> asyncio.Protocol:
        if greeting := self._scripted("connect"):
            return _Greeter(greeting)
        with self._lock:
            auth, smtputf8 = self._credentials is not None, self._smtputf8
        return _TrackedSMTP(
            self,
            handler=_Handler(self),
            hostname="smtp.test",
            authenticator=self._authenticate if auth else None,
            # aiosmtpd only advertises AUTH over TLS unless told otherwise; tests speak plaintext.
            auth_require_tls=not auth,
            enable_SMTPUTF8=smtputf8,
            loop=asyncio.get_running_loop(),
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        with self._lock:
            expected = self._credentials
        if not isinstance(data, LoginPassword) or expected is None:
            return AuthResult(success=False, handled=False)
        given = (data.login.decode(), data.password.decode())
        return AuthResult(success=given == expected, handled=False, auth_data=given[0])


class _Handler:
    """aiosmtpd hooks: https://aiosmtpd.aio-libs.org/en/latest/handlers.html"""

    def __init__(self, owner: SmtpServer) -> None:
        self._owner = owner

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self._owner._lock:
            auth_required = self._owner._credentials is not None
        if auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if reply := self._owner._scripted("mail"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str | bytes:
        self._owner.rcpt_attempts.add(address)
        refusal = self._owner._refusal(address, len(envelope.rcpt_tos))
        if reply := refusal or self._owner._scripted("rcpt"):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if reply := self._owner._scripted("data") or self._owner._content_refusal(
            envelope.original_content or b""
        ):
            return reply
        login = session.auth_data if isinstance(session.auth_data, str) else None
        mail = ReceivedMail(
            envelope.mail_from or "",
            tuple(envelope.rcpt_tos),
            envelope.original_content or b"",
            login,
            tuple(envelope.mail_options),
        )
        self._owner.received.add(mail)
        return "250 2.0.0 OK: queued"


# --- webhooks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptedResponse:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: wait this long before answering (past the client's timeout, to test timeouts)
    delay_s: float = 0.0
    #: reset the connection (TCP RST) instead of answering
    reset: bool = False


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    #: header names lower-cased; the last value wins for repeated headers
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver(_ThreadedServer):
    """An HTTP/1.1 server that records requests and answers from a script (200 when it runs out)."""

    def __init__(self, path: str = "/hook") -> None:
        super().__init__("webhook-test-receiver")
        self.path = path
        self.received: _Recorder[ReceivedRequest] = _Recorder()
        self._lock = threading.Lock()
        self._script: deque[ScriptedResponse] = deque()
        self._default = ScriptedResponse()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        return self.received.snapshot()

    def script(self, *responses: ScriptedResponse) -> None:
        """Answer the next requests with these, in order, then fall back to the default."""
        with self._lock:
            self._script.extend(responses)

    def respond(self, response: ScriptedResponse) -> None:
        """Answer every request not covered by the script with ``response``."""
        with self._lock:
            self._default = response

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[ReceivedRequest]:
        return self.received.wait_for(n, timeout_s)

    async def wait_for_async(self, n: int, timeout_s: float = 10.0) -> list[ReceivedRequest]:
        return await self.received.wait_for_async(n, timeout_s)

    def _next(self) -> ScriptedResponse:
        with self._lock:
            return self._script.popleft() if self._script else self._default

    def _factory(self) -> asyncio.Protocol:
        reader = asyncio.StreamReader()
        return _HttpProtocol(self, reader)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while request := await _read_request(reader):
                self.received.add(request)
                response = self._next()
                await asyncio.sleep(response.delay_s)
                if response.reset:
                    _reset(writer)
                    return
                writer.write(_encode(response))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up mid-exchange (its own timeout, or a reset we scripted)
        except asyncio.CancelledError:
            # Only stop() cancels us; Python 3.11's StreamReaderProtocol logs a cancelled handler
            # task as an unhandled error, so end normally instead.
            pass
        writer.close()


class _HttpProtocol(asyncio.StreamReaderProtocol):
    def __init__(self, owner: WebhookReceiver, reader: asyncio.StreamReader) -> None:
        super().__init__(reader, owner._serve)
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._transports.add(transport)
        self._transport_ref = transport
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._transports.discard(self._transport_ref)
        super().connection_lost(exc)


async def _read_request(reader: asyncio.StreamReader) -> ReceivedRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return ReceivedRequest(method, path, headers, body)


def _encode(response: ScriptedResponse) -> bytes:
    reason = http.HTTPStatus(response.status).phrase
    headers = {"Content-Length": str(len(response.body)), **response.headers}
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 {response.status} {reason}\r\n{head}\r\n".encode("latin-1") + response.body


def _reset(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
