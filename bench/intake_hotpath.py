"""The webhook intake's own code per alert, driven in-process: ``bench/intake_cpu.py --in-process``.

The real endpoint, body limit, Alertmanager mapping, acceptor (both routing plans, ids) and metrics
listener, on the benchmark config; the store commits nothing and no server or socket is involved.
Single-threaded and deterministic, so it resolves changes of a microsecond that the whole-daemon
figure (several processes on two shared cores) hides in its noise.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime

from starlette.types import Message

from bench.common import CONFIG, ROUTES
from daemon.api.auth import BearerAuth
from daemon.api.limits import BodyLimit
from daemon.api.ratelimit import LocalBuckets
from daemon.api.webhooks import WebhookEndpoint, WebhookIntake
from daemon.build import api_grants
from daemon.clock import SystemClock
from daemon.config import parse_config
from daemon.intake.accept import Acceptor
from daemon.metrics import Metrics
from daemon.store.values import Accepted, NewNotification


class _CommitNothing:
    """A store that accepts instantly: the in-process figure is the Python hot path alone."""

    async def accept(self, items: list[NewNotification], now: datetime, **_: object) -> list[Accepted]:
        return [Accepted(item.notification.id, duplicate=False) for item in items]


def in_process(body: str, path: str, alerts: int, runs: int) -> None:
    """The intake's own code per alert, without the HTTP server, the store or other processes."""
    config = parse_config(
        CONFIG.format(
            store="unused.db",
            api_port=1,
            smtp_port=1,
            every="15s",
            hook_url="http://127.0.0.1:9/hook",
            routes=ROUTES["failover"],
        ),
        env={"BENCH_TOKEN": "bench-token", "BENCH_WEBHOOK_SECRET": "whsec_" + "A" * 32},
    )
    metrics, routes = Metrics(), config.policy()  # as the daemon does: built once per (re)load
    acceptor = Acceptor(_CommitNothing(), lambda: routes, SystemClock(), lambda: None)  # type: ignore[arg-type]
    acceptor.subscribe(metrics.notifications_accepted)
    tokens, grants = config.api_tokens(), api_grants(config)
    gate = BearerAuth(lambda: tokens, lambda: grants, buckets=LocalBuckets())
    intake = WebhookIntake(acceptor, gate, lambda: False, lambda: config.intake)
    app = BodyLimit(WebhookEndpoint(intake), config.api.max_body_bytes)
    per_alert_us = [asyncio.run(_drive(app, body, path, f"r{run}", alerts)) for run in range(runs)]
    print(
        f"in process, CPU per alert without server and store, median of {runs} runs of "
        f"{alerts}: {statistics.median(per_alert_us):.1f} µs (runs: "
        + ", ".join(f"{us:.1f}" for us in per_alert_us)
        + ")"
    )


async def _drive(app: BodyLimit, template: str, path: str, run: str, alerts: int) -> float:
    bodies = [template.replace("@ID@", f"{run}-{i}").encode() for i in range(alerts)]
    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.process_time()
    for body in bodies:

        async def receive(body: bytes = body) -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [
            (b"host", b"127.0.0.1"),
            (b"authorization", b"Bearer bench-token"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await app({"type": "http", "method": "POST", "path": path, "headers": headers}, receive, send)
    elapsed = time.process_time() - started
    if statuses != [202] * alerts:
        raise RuntimeError(f"not all accepted: {sorted(set(statuses))}")
    return elapsed / alerts * 1e6
