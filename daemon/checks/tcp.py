"""The TCP check: can this host open a connection to ``host:port`` within the timeout?

A control target, outside the provider (a public resolver's port 53, another provider's MX): when
it fails together with the provider's checks, the trouble is our own network and the health policy
declares ``unknown (local network)`` instead of an outage. So every failure here, resolution
included, is DOWN: for a control target, our resolver failing is exactly the news.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime

from daemon.checks._http import ConfigError, Verdict, utc_now
from daemon.core.model import CheckResult, CheckStatus


class TcpCheck:
    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        timeout_s: float,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not host:
            raise ConfigError(f"check {name}: no host")
        if not 1 <= port <= 65535:
            raise ConfigError(f"check {name}: port {port} out of range")
        if timeout_s <= 0:
            raise ConfigError(f"check {name}: timeout must be positive, got {timeout_s}")
        self.name = name
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._clock = clock
        self._monotonic = monotonic

    async def run(self) -> CheckResult:
        started = self._monotonic()
        status, reason = await self._verdict()
        return CheckResult(self.name, status, reason, self._monotonic() - started, self._clock())

    async def aclose(self) -> None:
        """Nothing is held between runs."""

    async def _verdict(self) -> Verdict:
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.timeout_s):
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                # the peer may reset as we hang up; the connection already proved what we came for
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except TimeoutError:
            return CheckStatus.DOWN, f"{where}: no connection within {self.timeout_s:g}s"
        except socket.gaierror as exc:
            return CheckStatus.DOWN, f"{where}: cannot resolve {self.host} ({exc.strerror})"
        except OSError as exc:
            # asyncio's strerror is "Connect call failed (addr)"; the errno says why
            detail = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
            return CheckStatus.DOWN, f"{where}: {detail}"
        return CheckStatus.OK, f"{where}: connected"
