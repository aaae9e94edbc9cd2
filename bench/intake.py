"""Accepted notifications per second over HTTP, durable, one per request and in batches.

Starts ``backchannel run`` as a process (SQLite, synchronous=FULL) with every route deferred, so
the figures measure intake alone, then drives it from this process with concurrent keep-alive
clients. Prints throughput and p50/p99 latency, and the p99 at a fixed offered rate of 500/s.
Also prints the daemon's idle RSS and its start-to-ready time.

    .venv/bin/python bench/intake.py [--seconds 5] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DaemonUnderTest, percentile


async def closed_loop(
    url: str, token: str, seconds: float, clients: int, batch: int
) -> tuple[int, list[float]]:
    """Each client sends as fast as answers come back."""
    latencies: list[float] = []
    accepted = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:

        async def worker(n: int) -> None:
            nonlocal accepted
            i = 0
            while time.perf_counter() < deadline:
                one = {"severity": "info", "subject": f"bench {n}-{i}"}
                body = one if batch == 1 else [dict(one, subject=f"bench {n}-{i}-{j}") for j in range(batch)]
                started = time.perf_counter()
                response = await client.post("/v1/notifications", json=body)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 202, response.text
                accepted += batch
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
    return int(accepted / elapsed), latencies


async def open_loop(url: str, token: str, rate: float, seconds: float) -> list[float]:
    """Requests at a fixed offered rate, whatever the answers do (no coordinated omission)."""
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, limits=httpx.Limits(max_connections=200)
    ) as client:

        async def one(i: int, scheduled: float) -> None:
            await client.post("/v1/notifications", json={"severity": "info", "subject": f"rate {i}"})
            latencies.append(time.perf_counter() - scheduled)

        start = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
    return latencies


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, DaemonUnderTest(Path(tmp), routes="defer") as daemon:
        print(f"start to ready: {ms(daemon.ready_s)}; idle RSS: {daemon.rss_mb():.1f} MB")
        for batch in (1, 100):
            rate, lat = asyncio.run(closed_loop(daemon.url, daemon.token, args.seconds, args.clients, batch))
            print(
                f"batch {batch:>3}: {rate:>7,} accepted/s  request p50 {ms(statistics.median(lat))}  "
                f"p99 {ms(percentile(lat, 99))}  ({args.clients} clients, {args.seconds:g}s)"
            )
        lat = asyncio.run(open_loop(daemon.url, daemon.token, 500, args.seconds))
        print(
            f"at 500/s offered, one per request: p50 {ms(statistics.median(lat))}  "
            f"p99 {ms(percentile(lat, 99))}"
        )
        print(f"RSS after the runs: {daemon.rss_mb():.1f} MB")


if __name__ == "__main__":
    main()
