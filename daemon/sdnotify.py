"""The systemd notification protocol (``sd_notify``), spoken from the main process.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket named by
``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace):
https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html#Notes. The unit says
``NotifyAccess=main``, so the datagrams must come from this process itself, never from a
``systemd-notify`` child.

The watchdog proves more than "the process exists": :func:`watchdog_loop` runs on the event loop and
pings only while a caller's ``healthy()`` says the loop and the dispatcher are making progress. A wedged
loop cannot run the coroutine and a stalled dispatcher stops beating :class:`Progress`, so either one
stops the pings and systemd restarts the daemon after ``WatchdogSec=``.

The environment is passed in as a mapping; only the composition root reads ``os.environ``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class NotifyError(Exception):
    """NOTIFY_SOCKET names an address this process cannot use."""


class Notifier:
    """Sends state changes to the service manager; does nothing when NOTIFY_SOCKET is unset."""

    def __init__(self, env: Mapping[str, str], *, pid: int | None = None) -> None:
        self._env = env
        self._pid = os.getpid() if pid is None else pid
        self._address = _address(env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self._failing = False
        if self._address is not None:
            # Non-blocking: a full receive queue must cost one lost datagram, never a stalled loop.
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> None:
        """Send ``KEY=VALUE`` lines in one datagram; a failure is logged once per failing streak."""
        if self._sock is None or self._address is None:
            return
        try:
            self._sock.sendto("\n".join(assignments).encode(), self._address)
        except OSError as exc:
            if not self._failing:
                log.error(
                    "cannot notify the service manager at %s: %s",
                    self._env.get("NOTIFY_SOCKET"),
                    exc,
                    extra={"event": "sdnotify.failed", "sent": assignments[0] if assignments else ""},
                )
            self._failing = True
            return
        self._failing = False

    def ready(self, status: str | None = None) -> None:
        """Startup or a reload is complete: the store is open and every listener is bound."""
        self.send("READY=1", *_status(status))

    def status(self, text: str) -> None:
        """A one-line description for ``systemctl status`` (provider state, queue depth)."""
        self.send(f"STATUS={_one_line(text)}")

    def reloading(self, status: str | None = None) -> None:
        """A reload starts; :meth:`ready` ends it.

        systemd >= 253 drops a ``RELOADING=1`` without a ``MONOTONIC_USEC=`` in the same datagram
        (https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html#RELOADING=1); the
        clock is CLOCK_MONOTONIC, the one the service manager compares it with.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> None:
        """The drain has begun."""
        self.send("STOPPING=1", *_status(status))

    def watchdog(self) -> None:
        """Tell the service manager the daemon is alive and making progress."""
        self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """``WatchdogSec=`` in seconds, or None when the watchdog is off or meant for another process."""
        usec = self._env.get("WATCHDOG_USEC", "")
        if not usec.isdigit() or int(usec) == 0:
            return None
        watchdog_pid = self._env.get("WATCHDOG_PID", "")
        if watchdog_pid and (not watchdog_pid.isdigit() or int(watchdog_pid) != self._pid):
            return None
        return int(usec) / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise NotifyError(f"NOTIFY_SOCKET={value!r} is neither an absolute path nor an abstract '@' name")


def _status(text: str | None) -> tuple[str, ...]:
    return () if text is None else (f"STATUS={_one_line(text)}",)


def _one_line(text: str) -> str:
    # A newline would start a new assignment inside the datagram.
    return " ".join(text.split())


class Progress:
    """Heartbeats from the components that must keep moving for the watchdog to be fed.

    Each component is expected with the longest quiet time it is allowed (a loop that polls every
    second might get five); :meth:`healthy` is true while every expected component beat within it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._limits: dict[str, float] = {}
        self._beats: dict[str, float] = {}

    def expect(self, component: str, within_s: float) -> None:
        self._limits[component] = within_s
        self._beats[component] = self._clock()

    def forget(self, component: str) -> None:
        self._limits.pop(component, None)
        self._beats.pop(component, None)

    def beat(self, component: str) -> None:
        self._beats[component] = self._clock()

    def stalled(self) -> list[str]:
        """The expected components that have been quiet for longer than they may be."""
        now = self._clock()
        return [name for name, limit in self._limits.items() if now - self._beats[name] > limit]

    def healthy(self) -> bool:
        return not self.stalled()


async def watchdog_loop(notifier: Notifier, interval_s: float, healthy: Callable[[], bool]) -> None:
    """Ping every ``interval_s / 2`` while ``healthy()``; runs until cancelled.

    Half the interval is what sd_watchdog_enabled(3) recommends: one late wake-up on a loaded machine
    must not be enough to get the daemon killed.
    """
    period = interval_s / 2
    silent = False
    while True:
        if healthy():
            notifier.watchdog()
            silent = False
        elif not silent:
            log.error(
                "withholding the watchdog ping: the daemon is not making progress",
                extra={"event": "sdnotify.watchdog_withheld"},
            )
            silent = True
        await asyncio.sleep(period)
