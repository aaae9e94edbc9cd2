"""What the in-process tests share: polling with a deadline, a running daemon, the stand-ins, a config
head, and a dispatcher wired to its monitor the way the daemon wires it.

The daemon here is the real composition root (:class:`daemon.app.Daemon`) in the test's event loop,
talking to the stand-ins over 127.0.0.1; the acceptance tier's ``tests/acceptance/harness.py`` runs
it as a process instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

import httpx
import pytest
import uvicorn

from channels.base import Channel, OutboundMessage
from daemon.api.app import ApiContext, create_api
from daemon.app import Daemon
from daemon.clock import Clock
from daemon.config import parse_config
from daemon.core.health import Thresholds
from daemon.core.model import Severity
from daemon.core.routing import Route
from daemon.dispatch_policy import ChannelPolicy, DispatchSettings
from daemon.dispatcher import Dispatcher
from daemon.intake.accept import Acceptor, Submission
from daemon.monitor import ProviderMonitor
from daemon.rendering import Renderer
from daemon.rerouting import Rerouter
from daemon.store.base import Store
from tests.servers import SmtpServer
from tests.stand_ins import slack as slack_stand_in
from tests.stand_ins import twilio as twilio_stand_in
from tests.stand_ins.slack import SlackStandIn
from tests.stand_ins.twilio import TwilioStandIn

T = TypeVar("T")


def outbound_message(n: int = 1, **overrides: object) -> OutboundMessage:
    """A critical message as a channel gets it, numbered ``n`` (id ``ntf_00n``), for channel tests."""
    fields: dict[str, object] = {
        "notification_id": f"ntf_{n:03d}",
        "idempotency_key": f"ntf_{n:03d}",
        "severity": "critical",
        "subject": f"Disk full #{n}",
        "body": "db-1 at 99%",
        "created_at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    }
    fields.update(overrides)
    return OutboundMessage(**fields)  # type: ignore[arg-type]


#: provider ``p``, whose hourly check stays out of the way (tests drive its state with the
#: override), and the primary channel ``email``; for ``str.format``, with ``smtp_port``
PROVIDER_AND_EMAIL = """\
provider:
  name: p
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false}}
  mail_from: bc@test.example
  checks: [{{type: smtp, every: 1h, timeout: 2s}}]
channels:
  email: {{type: email, to: [ops@test.example]}}
"""
_HEAD = (
    """\
store: {{path: {store}}}
api: {{listen: "127.0.0.1:{api_port}", tokens: [{{name: t, token: "${{TOKEN}}"}}]}}
"""
    + PROVIDER_AND_EMAIL
)


#: one firing alert as Alertmanager's webhook sends it (version 4), for the intake tests
FIRING_ALERT = {
    "status": "firing",
    "labels": {"alertname": "DiskFull", "severity": "critical"},
    "annotations": {"summary": "disk full on db-1"},
    "startsAt": "2026-11-27T08:00:00Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus.example/graph",
    "fingerprint": "d15cf011",
}


def config_template(rest: str) -> str:
    """A daemon config for ``str.format``: the common head, then ``rest`` (more channels, routes...).

    The head takes ``store``, ``api_port`` (0: any) and ``smtp_port``: one API token from
    ``${TOKEN}``, provider ``p`` whose hourly check stays out of the way (the tests drive its state
    with the override), and the primary channel ``email``. ``rest`` goes on inside ``channels:``.
    """
    return _HEAD + rest


@overload
async def until(
    predicate: Callable[[], Awaitable[T]], deadline_s: float = ..., *, every_s: float = ...
) -> T: ...
@overload
async def until(predicate: Callable[[], T], deadline_s: float = ..., *, every_s: float = ...) -> T: ...
async def until(predicate: Callable[[], Any], deadline_s: float = 20.0, *, every_s: float = 0.05) -> Any:
    """Poll ``predicate`` (plain or async) until it is truthy and return that value; fail at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met within {deadline_s}s"
        await asyncio.sleep(every_s)


async def stop_as_connections_arrive(stop: Callable[[], Awaitable[None]]) -> None:
    """Begin ``stop()`` in the loop turn that accepts the connections the caller opened while it
    held the loop (they wait in the listener's backlog), and wait until the stop is done."""
    stopping: list[asyncio.Future[None]] = []
    asyncio.get_running_loop().call_soon(lambda: stopping.append(asyncio.ensure_future(stop())))
    await until(lambda: bool(stopping) and stopping[0].done())


def listening_socket(backlog: int = 64) -> socket.socket:
    """A non-blocking socket listening on an ephemeral port of 127.0.0.1, for a server to start on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def read_until_closed(client: socket.socket) -> bytes:
    """Everything the server sends before it closes (the socket's timeout fails the caller)."""
    chunks = []
    while chunk := client.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


@contextlib.asynccontextmanager
async def running(text: str, env: Mapping[str, str] | None = None) -> AsyncIterator[Daemon]:
    """A daemon started from config ``text`` (``env`` resolves its ``${...}``), stopped on the way out."""
    daemon = Daemon(parse_config(text, env=env))
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


def api_client(daemon: Daemon, token: str, *, timeout: float = 5.0) -> httpx.AsyncClient:
    """A client for the running daemon's API, authenticated with ``token`` (5 s is httpx's default)."""
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{daemon.api_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )


@contextlib.asynccontextmanager
async def daemon_api(
    text: str, token: str, env: Mapping[str, str] | None = None, *, timeout: float = 5.0
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """:func:`running`, with a client authenticated with ``token``."""
    async with running(text, env) as daemon, api_client(daemon, token, timeout=timeout) as api:
        yield daemon, api


@contextlib.asynccontextmanager
async def stand_ins(slack: SlackStandIn, twilio: TwilioStandIn) -> AsyncIterator[SmtpServer]:
    """The provider's SMTP server (yielded), ``slack`` and ``twilio`` serving on 127.0.0.1."""
    with SmtpServer() as smtp:
        async with slack_stand_in.serve(slack), twilio_stand_in.serve(twilio):
            yield smtp


def monitor_for(store: Store, clock: Clock) -> ProviderMonitor:
    """A provider monitor on ``store``: two results either way change the state, passive reports at once."""
    return ProviderMonitor(store, Thresholds(failure=2, success=2, passive_min_interval=timedelta(0)), clock)


def dispatcher_for(
    store: Store,
    monitor: ProviderMonitor,
    channels: Mapping[str, Channel],
    policies: Mapping[str, ChannelPolicy],
    routes: Sequence[Route],
    clock: Clock,
    *,
    poll_s: float = 0.1,
    lease_s: float = 300.0,
    renderer: Renderer | None = None,
) -> Dispatcher:
    """A dispatcher following ``monitor``'s state, rerouting by ``routes``, draining within 2 s on stop."""
    return Dispatcher(
        store,
        channels,
        policies,
        clock=clock,
        state=lambda: monitor.state,
        mode=lambda: monitor.mode,
        rerouter=Rerouter(store, lambda: routes, clock),
        on_primary_failure=monitor.passive_failure,
        settings=DispatchSettings(poll_s=poll_s, drain_grace_s=2, lease_s=lease_s),
        renderer=renderer,
    )


class serve_api:
    """The HTTP API on 127.0.0.1 with an OS-chosen port, as the daemon serves it; yields its base URL."""

    def __init__(self, ctx: ApiContext) -> None:
        config = uvicorn.Config(create_api(ctx), log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._sock = socket.socket()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> str:
        self._sock.bind(("127.0.0.1", 0))
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        await until(lambda: self._server.started)
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    async def __aexit__(self, *_: object) -> None:
        self._server.should_exit = True
        assert self._task is not None
        await self._task
        self._sock.close()


class VirtualClock:
    """Wall time that moves only when the test says; monotonic time is real (the loop's pacing)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()


class OutboxWorld:
    """For a test world holding ``store`` and ``acceptor``: submit straight to the outbox, read it back."""

    store: Store
    acceptor: Acceptor

    async def submit(self, count: int, severity: Severity = Severity.CRITICAL, **labels: str) -> list[str]:
        subs = [Submission(severity=severity, subject=f"n{i}", labels=labels) for i in range(count)]
        return [a.id for a in await self.acceptor.accept(subs)]

    async def trail(self, nid: str) -> list[tuple[str, str, str]]:
        view = await self.store.notification(nid)
        assert view is not None
        return [(a.channel, a.outcome, a.detail or "") for a in view.attempts]

    async def all_delivered(self, ids: list[str]) -> bool:
        for nid in ids:
            view = await self.store.notification(nid)
            if view is None or view.status != "delivered":
                return False
        return True


class ApiWorld:
    """For a test world holding an authenticated ``api`` client: submit over HTTP."""

    api: httpx.AsyncClient

    async def submit(self, subject: str, recipients: list[str], **fields: Any) -> str:
        body = {"severity": "critical", "subject": subject, "recipients": recipients, **fields}
        response = await self.api.post("/v1/notifications", json=body)
        assert response.status_code == 202, response.text
        notification_id: str = response.json()["id"]
        return notification_id

    async def trail(self, nid: str) -> dict[str, Any]:
        """The notification as ``GET /v1/notifications/{id}`` shows it: status, deliveries, attempts."""
        data: dict[str, Any] = (await self.api.get(f"/v1/notifications/{nid}")).json()
        return data

    async def status(self, nid: str) -> str:
        status: str = (await self.trail(nid))["status"]
        return status


def installed(*commands: str, package: str) -> str:
    """The path of the first of ``commands`` on PATH; without one the test skips, saying how to install
    it, and fails under CI=true (``.ci/run`` installs Debian's ``package``)."""
    for command in commands:
        if (found := shutil.which(command)) is not None:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"{commands[0]} is not installed (.ci/run installs Debian's {package})")
    pytest.skip(f"{commands[0]} is not installed (apt-get install {package}); CI=true makes this fail")
