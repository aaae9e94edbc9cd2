"""High availability: throughput with 1, 2 and 3 nodes on one PostgreSQL, and failover time.

Starts ``backchannel run`` processes sharing a throwaway schema, routes everything to a local
webhook receiver, posts notifications in batches spread over the nodes, and prints accepted/s
(every 202 committed) and delivered/s (first receipt of each). On one small machine the figure
is about overhead, not scaling: the nodes share its cores and the database. Then kills the
leader of three nodes with SIGKILL and prints how long until another holds the lease.

    .venv/bin/python bench/ha.py [--count 2000] [--lease 2]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import free_port
from daemon.demo.standins import SmtpProvider

URL = os.environ.get("BACKCHANNEL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
TOKEN = secrets.token_urlsafe(24)
SMTP = SmtpProvider(free_port())
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
BATCH = 50

CONFIG = """\
store: {{url: "{url}", node: {node}, leader_lease: {lease}s, pool_size: 4}}
api:
  listen: 127.0.0.1:{api_port}
  tokens: [{{name: bench, token: "${{BENCH_TOKEN}}"}}]
provider:
  name: bench-provider
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false, timeout: 500ms}}
  mail_from: backchannel@bench.example
  checks: [{{type: smtp, every: 1s, timeout: 500ms}}]
channels:
  hook: {{type: webhook, url: "{hook_url}", secret: "${{BENCH_WEBHOOK_SECRET}}", allow_private: true,
          concurrency: 16}}
routes:
  - {{match: {{}}, healthy: [hook], outage: [hook]}}
dispatch: {{poll: 200ms, lease: 10s}}
"""


class Receiver(ThreadingHTTPServer):
    """Counts the distinct notification ids delivered to it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: set[str] = set()
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        key = str(json.loads(body).get("subject"))
        server = self.server
        assert isinstance(server, Receiver)
        with server.lock:
            server.seen.add(key)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def schema() -> Iterator[str]:
    name = f"bc_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"'.encode())
    try:
        yield f"{URL}{'&' if '?' in URL else '?'}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE'.encode())


@contextmanager
def cluster(
    n: int, url: str, hook_url: str, lease: float, workdir: Path
) -> Iterator[list[tuple[str, int, subprocess.Popen[bytes]]]]:
    nodes: list[tuple[str, int, subprocess.Popen[bytes]]] = []
    env = dict(os.environ, BENCH_TOKEN=TOKEN, BENCH_WEBHOOK_SECRET=SECRET)
    try:
        for i in range(n):
            port, name = free_port(), f"bench{i}"
            config = workdir / f"{name}.yaml"
            config.write_text(
                CONFIG.format(
                    url=url, node=name, lease=lease, api_port=port, hook_url=hook_url, smtp_port=SMTP.port
                )
            )
            log = (workdir / f"{name}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "-c", str(config)], stdout=log, stderr=log, env=env
            )
            _wait_ready(port, proc, workdir / f"{name}.log")
            nodes.append((name, port, proc))
        yield nodes
    finally:
        for _, _, proc in nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.02)


def post_all(ports: list[int], count: int, threads: int = 4) -> None:
    chunks = [list(range(i, min(count, i + BATCH))) for i in range(0, count, BATCH)]

    def post(mine: list[list[int]], start: int) -> None:
        turn = itertools.cycle(ports[start % len(ports) :] + ports[: start % len(ports)])
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
            for chunk in mine:
                body = [{"severity": "critical", "subject": f"bench {i}"} for i in chunk]
                response = client.post(f"http://127.0.0.1:{next(turn)}/v1/notifications", json=body)
                response.raise_for_status()

    workers = [threading.Thread(target=post, args=(chunks[t::threads], t)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def throughput(n: int, count: int, lease: float, receiver: Receiver, workdir: Path) -> None:
    receiver.seen.clear()
    hook_url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    with schema() as url, cluster(n, url, hook_url, lease, workdir) as nodes:
        started = time.perf_counter()
        post_all([port for _, port, _ in nodes], count)
        accepted_s = time.perf_counter() - started
        deadline = time.monotonic() + 300
        while len(receiver.seen) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        delivered_s = time.perf_counter() - started
    print(
        f"{n} node(s): {count / accepted_s:8.0f} accepted/s   "
        f"{len(receiver.seen) / delivered_s:8.0f} delivered/s   ({len(receiver.seen)}/{count} delivered)"
    )


def failover(lease: float, receiver: Receiver, workdir: Path) -> None:
    hook_url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    with schema() as url, cluster(3, url, hook_url, lease, workdir) as nodes:
        first = _leader(url, None, 30)
        proc = next(p for name, _, p in nodes if name == first)
        proc.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        proc.wait(10)
        second = _leader(url, first, 60)
        took = time.perf_counter() - killed
    print(f"failover: {first} killed, {second} leads after {took:.2f} s (lease {lease:g} s)")


def _leader(url: str, other_than: str | None, deadline_s: float) -> str:
    deadline = time.monotonic() + deadline_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT node FROM leader WHERE expires_at > now()").fetchone()
            if row is not None and row[0] is not None and row[0] != other_than:
                return str(row[0])
            time.sleep(0.02)
    raise RuntimeError("no leader elected in time")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--lease", type=float, default=2.0)
    args = parser.parse_args()
    receiver = Receiver()
    SMTP.start()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in (1, 2, 3):
                throughput(n, args.count, args.lease, receiver, Path(tmp))
            failover(args.lease, receiver, Path(tmp))
    finally:
        receiver.shutdown()
        SMTP.stop()


if __name__ == "__main__":
    main()
