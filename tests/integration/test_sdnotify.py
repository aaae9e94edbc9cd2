"""sd_notify against a real AF_UNIX datagram socket, as systemd's manager would bind it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from daemon.sdnotify import Notifier, NotifyError, Progress, watchdog_loop

DEADLINE_S = 10.0


class Manager:
    """The service manager's end: records each datagram with the time it arrived."""

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                data = self.sock.recv(4096)
                with self._lock:
                    self.received.append((time.monotonic(), data.decode()))

    def messages(self) -> list[str]:
        with self._lock:
            return [m for _, m in self.received]

    def pings(self) -> list[float]:
        with self._lock:
            return [t for t, m in self.received if m == "WATCHDOG=1"]

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; received {self.messages()}"
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        if isinstance(self.address, str):
            Path(self.address).unlink(missing_ok=True)


async def _until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[Manager, Notifier]]:
    manager = Manager(str(tmp_path / "notify"))
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    yield manager, notifier
    notifier.close()
    manager.close()


@contextlib.asynccontextmanager
async def _watchdog(
    notifier: Notifier, interval_s: float, healthy: Callable[[], bool]
) -> AsyncIterator[None]:
    task = asyncio.create_task(watchdog_loop(notifier, interval_s, healthy))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_ready_status_stopping_arrive_as_sent(path_socket: tuple[Manager, Notifier]) -> None:
    """READY=1, STATUS=, STOPPING=1 reach a socket bound at a path, one datagram each."""
    manager, notifier = path_socket
    notifier.ready("provider healthy; queue 0")
    notifier.status("provider outage\nqueue 3")
    notifier.stopping()
    manager.wait_for(lambda: len(manager.messages()) == 3)
    assert manager.messages() == [
        "READY=1\nSTATUS=provider healthy; queue 0",
        "STATUS=provider outage queue 3",
        "STOPPING=1",
    ]


def test_reloading_carries_monotonic_usec(path_socket: tuple[Manager, Notifier]) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC= read from CLOCK_MONOTONIC, as systemd >= 253 requires."""
    manager, notifier = path_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.ready()
    manager.wait_for(lambda: len(manager.messages()) == 2)
    reloading, ready = manager.messages()
    first, second = reloading.split("\n")
    assert (first, ready) == ("RELOADING=1", "READY=1")
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_abstract_socket_receives(tmp_path: Path) -> None:
    """An ``@name`` NOTIFY_SOCKET reaches the abstract-namespace socket of that name."""
    name = f"backchannel-test-{secrets.token_hex(6)}"
    manager = Manager(b"\0" + name.encode())
    notifier = Notifier({"NOTIFY_SOCKET": f"@{name}"})
    try:
        notifier.ready()
        manager.wait_for(lambda: manager.messages() == ["READY=1"])
    finally:
        notifier.close()
        manager.close()


class _Sends:
    """A healthy() predicate that notes when the watchdog decided to ping (it sends right after)."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def __call__(self) -> bool:
        self.at.append(time.monotonic())
        return True


async def test_watchdog_pings_at_half_the_interval(path_socket: tuple[Manager, Notifier]) -> None:
    """While healthy, WATCHDOG=1 arrives about every interval/2."""
    manager, notifier = path_socket
    sends = _Sends()
    async with _watchdog(notifier, 0.4, sends):
        await _until(lambda: len(manager.pings()) >= 6)
    assert min(b - a for a, b in itertools.pairwise(sends.at)) >= 0.19, sends.at
    arrivals = [b - a for a, b in itertools.pairwise(manager.pings())]
    assert 0.18 <= statistics.median(arrivals) <= 0.6, arrivals


async def test_blocked_loop_stops_the_pings(path_socket: tuple[Manager, Notifier]) -> None:
    """A loop stuck in blocking code sends nothing until it is free again."""
    manager, notifier = path_socket
    sends = _Sends()
    async with _watchdog(notifier, 0.2, sends):
        await _until(lambda: len(manager.pings()) >= 3)
        blocked_from = time.monotonic()
        time.sleep(1.0)  # the wedge under test: blocking code on the event loop
        blocked_until = time.monotonic()
        await _until(lambda: len(sends.at) > 0 and sends.at[-1] > blocked_until)
        await _until(lambda: len(manager.pings()) == len(sends.at))
    assert not [t for t in sends.at if blocked_from < t < blocked_until], sends.at
    assert max(b - a for a, b in itertools.pairwise(sends.at)) >= 1.0


async def test_unhealthy_dispatcher_withholds_pings(path_socket: tuple[Manager, Notifier]) -> None:
    """Pings are sent exactly when healthy() says so: none while it is false, again once it is true."""
    manager, notifier = path_socket
    state = {"healthy": True, "true": 0, "false": 0}

    def healthy() -> bool:
        key = "true" if state["healthy"] else "false"
        state[key] += 1
        return bool(state["healthy"])

    async with _watchdog(notifier, 0.1, healthy):
        await _until(lambda: state["true"] >= 2)
        state["healthy"] = False
        await _until(lambda: state["false"] >= 4)
        await _until(lambda: len(manager.pings()) == state["true"])
        withheld_at = state["true"]
        state["healthy"] = True
        await _until(lambda: len(manager.pings()) >= withheld_at + 2)
    assert len(manager.pings()) == state["true"]


def test_progress_turns_unhealthy_when_a_component_stalls() -> None:
    """Progress is healthy while each expected component beats within its limit."""
    now = [100.0]
    progress = Progress(clock=lambda: now[0])
    progress.expect("dispatcher", within_s=5)
    progress.expect("loop", within_s=1)
    now[0] += 0.9
    progress.beat("loop")
    assert progress.healthy()
    now[0] += 4.5
    assert (progress.healthy(), progress.stalled()) == (False, ["dispatcher", "loop"])
    progress.beat("dispatcher")
    progress.beat("loop")
    assert progress.healthy()
    progress.forget("loop")
    now[0] += 2
    assert progress.healthy()


def test_no_socket_is_a_no_op() -> None:
    """Without NOTIFY_SOCKET every call does nothing and the watchdog is off."""
    notifier = Notifier({})
    notifier.ready()
    notifier.watchdog()
    assert (notifier.enabled, notifier.watchdog_interval()) == (False, None)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_environment(env: dict[str, str], expected: float | None) -> None:
    """WATCHDOG_USEC gives the interval, unless WATCHDOG_PID names another process."""
    assert Notifier(env, pid=4242).watchdog_interval() == expected


def test_watchdog_pid_defaults_to_this_process() -> None:
    """Without an explicit pid, WATCHDOG_PID is compared with os.getpid()."""
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env).watchdog_interval() == 2.0


def test_relative_socket_path_is_rejected() -> None:
    """A NOTIFY_SOCKET that is neither absolute nor abstract fails at startup, not silently."""
    with pytest.raises(NotifyError, match="neither an absolute path"):
        Notifier({"NOTIFY_SOCKET": "notify.sock"})


def test_vanished_socket_logs_once_per_streak_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Sends to a vanished socket never raise and log one error per failing streak."""
    address = str(tmp_path / "notify")
    notifier = Notifier({"NOTIFY_SOCKET": address})
    with caplog.at_level(logging.ERROR, logger="daemon.sdnotify"):
        for _ in range(3):
            notifier.watchdog()
        manager = Manager(address)
        notifier.ready()
        manager.wait_for(lambda: manager.messages() == ["READY=1"])
        manager.close()
        for _ in range(3):
            notifier.watchdog()
    notifier.close()
    assert [getattr(r, "event", None) for r in caplog.records] == ["sdnotify.failed"] * 2


async def test_the_status_line_outlives_a_failure_to_make_it(
    path_socket: tuple[Manager, Notifier], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The status callable raising (a bug, a store error it did not expect) is logged once; the
    line is sent again once it can be made, and the stop that awaits the loop is not failed."""
    from daemon import supervision

    manager, _ = path_socket
    monkeypatch.setattr(supervision, "STATUS_EVERY_S", 0.01)
    calls = itertools.count()

    async def status() -> str:
        n = next(calls)
        if 0 < n < 5:  # after the READY line
            raise RuntimeError("not now")
        return "starting" if n == 0 else "all well"

    watched = supervision.Supervision({"NOTIFY_SOCKET": str(manager.address)}, status, 60.0)
    await watched.ready()
    try:
        await asyncio.wait_for(_until(lambda: "STATUS=all well" in manager.messages()), DEADLINE_S)
    finally:
        await watched.stopping()
    assert len([r for r in caplog.records if "status line could not be made" in r.message]) == 1


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
