"""Load generators for the benchmarks: wrk for closed-loop throughput, a raw-socket open loop.

httpx's async client spends more CPU per request than the daemon does, so it cannot measure the
daemon on a 2-core machine. Closed-loop throughput uses wrk (Debian package ``wrk``); the
fixed-rate latency measurement uses minimal keep-alive HTTP/1.1 connections over asyncio streams,
and measures each request from its *scheduled* time (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float


def wrk(url: str, token: str, body: object, *, connections: int, seconds: float) -> WrkResult:
    if shutil.which("wrk") is None:
        raise SystemExit("bench needs wrk: apt-get install wrk")
    script = (
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{json.dumps(body)}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", lua.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    if re.search(r"Non-2xx or 3xx responses", out):
        raise RuntimeError(f"the daemon refused requests during the run:\n{out}")
    return WrkResult(
        float(_field(r"Requests/sec:\s+([\d.]+)", out)),
        # Anchored: the "+/- Stdev" column (e.g. "62.50%") must not pass for a percentile.
        _ms(_field(r"^\s*50%\s+(\S+)", out)),
        _ms(_field(r"^\s*99%\s+(\S+)", out)),
    )


def _field(pattern: str, out: str) -> str:
    found = re.search(pattern, out, re.M)
    if found is None:
        raise RuntimeError(f"unexpected wrk output ({pattern!r} not found):\n{out}")
    return found[1]


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def open_loop(
    host: str,
    port: int,
    path: str,
    token: str,
    body: object,
    *,
    rate: float,
    seconds: float,
    connections: int = 64,
) -> list[float]:
    """Latencies (s) of requests sent at a fixed rate, measured from their scheduled start."""
    payload = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while (scheduled := await queue.get()) is not None:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 202"):
                raise RuntimeError(head.decode())
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head)[1])  # type: ignore[index]
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - scheduled)
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    start = time.perf_counter() + 0.2
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        queue.put_nowait(scheduled)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies
