"""Accepted notifications per second over HTTP, durable, one per request and in batches.

Starts ``backchannel run`` as a process (SQLite, synchronous=FULL) whose routes defer
everything, so the figures measure intake alone; every 202 means committed to disk. Prints
closed-loop throughput with p50/p99 (wrk), the p50/p99 at a fixed offered rate of 500/s, the
start-to-ready time and the idle RSS.

    .venv/bin/python bench/intake.py [--seconds 5] [--connections 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DaemonUnderTest, percentile
from bench.loadgen import open_loop, wrk

ONE = {"severity": "info", "subject": "benchmark notification", "body": "x" * 200}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, DaemonUnderTest(Path(tmp), routes="defer") as daemon:
        print(f"start to ready: {daemon.ready_s * 1000:.0f} ms; idle RSS: {daemon.rss_mb():.1f} MB")
        url = f"{daemon.url}/v1/notifications"
        for connections in args.connections:
            r = wrk(url, daemon.token, ONE, connections=connections, seconds=args.seconds)
            print(
                f"one per request, {connections:>3} connections: {r.requests_per_s:>8,.0f} accepted/s  "
                f"p50 {r.p50_ms:.1f} ms  p99 {r.p99_ms:.1f} ms"
            )
        r = wrk(url, daemon.token, [ONE] * 100, connections=16, seconds=args.seconds)
        print(
            f"batches of 100,  16 connections: {r.requests_per_s * 100:>8,.0f} accepted/s  "
            f"p50 {r.p50_ms:.1f} ms  p99 {r.p99_ms:.1f} ms per request"
        )
        lat = asyncio.run(
            open_loop(
                "127.0.0.1",
                daemon.api_port,
                "/v1/notifications",
                daemon.token,
                ONE,
                rate=500,
                seconds=args.seconds,
            )
        )
        print(
            f"at 500/s offered, one per request: p50 {statistics.median(lat) * 1000:.1f} ms  "
            f"p99 {percentile(lat, 99) * 1000:.1f} ms  ({len(lat)} requests)"
        )
        print(f"RSS after the runs: {daemon.rss_mb():.1f} MB")


if __name__ == "__main__":
    main()
