"""What the benchmarks share: the daemon started as a process on a throwaway config."""

from __future__ import annotations

import base64
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import httpx

from daemon.demo.standins import SmtpProvider

CONFIG = """\
store: {{path: {store}}}
api:
  listen: 127.0.0.1:{api_port}
  tokens: [{{name: bench, token: "${{BENCH_TOKEN}}"}}]
provider:
  name: bench-provider
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false, timeout: 2s}}
  mail_from: backchannel@bench.example
  checks: [{{type: smtp, every: {every}, timeout: 500ms}}]
  failure_threshold: 3
  success_threshold: 3
channels:
  email: {{type: email, to: [oncall@bench.example]}}
  hook: {{type: webhook, url: "{hook_url}", secret: "${{BENCH_WEBHOOK_SECRET}}", allow_private: true}}
routes:
{routes}
"""

ROUTES = {
    "defer": "  - {match: {}, healthy: defer, outage: defer}\n",
    "failover": (
        "  - {match: {severity: [critical]}, healthy: [email], outage: [hook]}\n"
        "  - {match: {}, healthy: [email], outage: defer}\n"
    ),
    "hook": "  - {match: {}, healthy: [hook], outage: [hook]}\n",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


#: seconds per clock tick, the unit of /proc's CPU times
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path: str) -> float:
    """User + system CPU time from a /proc ``stat`` file (a process's or one of its threads')."""
    # fields after the parenthesised command name; utime and stime are the 14th and 15th fields
    fields = Path(stat_path).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its children alive now (the daemon and its intake workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return cpu_seconds(f"/proc/{pid}/stat") + sum(cpu_seconds(f"/proc/{c}/stat") for c in children)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


class DaemonUnderTest:
    def __init__(
        self,
        workdir: Path,
        *,
        routes: str,
        hook_url: str = "http://127.0.0.1:9/hook",
        every: str = "15s",
        smtp: SmtpProvider | None = None,
        webhook_secret: str | None = None,
        workers: int = 0,
    ) -> None:
        self.workdir = workdir
        self.token = secrets.token_urlsafe(24)
        self.webhook_secret = webhook_secret or "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.smtp = smtp or SmtpProvider(free_port())
        self._own_smtp = smtp is None
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        #: where to send intake: the intake workers' port when there are workers, else the API's
        self.intake_port = free_port() if workers else self.api_port
        self.workers = workers
        self.config = workdir / "bench.yaml"
        self.config.write_text(
            CONFIG.format(
                store=workdir / "bench.db",
                api_port=self.api_port,
                smtp_port=self.smtp.port,
                every=every,
                hook_url=hook_url,
                routes=ROUTES[routes],
            )
            + (
                f"intake: {{workers: {{listen: '127.0.0.1:{self.intake_port}', count: {workers}}}}}\n"
                if workers
                else ""
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s = 0.0

    def __enter__(self) -> DaemonUnderTest:
        if self._own_smtp:
            self.smtp.start()
        env = dict(os.environ, BENCH_TOKEN=self.token, BENCH_WEBHOOK_SECRET=self.webhook_secret)
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "-c", str(self.config)],
            stdout=(self.workdir / "daemon.log").open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200 and self._workers_ready():
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "daemon.log").read_text())
            time.sleep(0.005)
        self.ready_s = time.perf_counter() - started
        return self

    def _workers_ready(self) -> bool:
        """Every intake worker serving (they start after the API answers)."""
        if not self.workers:
            return True
        metrics = httpx.get(
            f"{self.url}/metrics", headers={"Authorization": f"Bearer {self.token}"}, timeout=5
        )
        return f"backchannel_intake_workers {self.workers}.0" in metrics.text

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
        if self._own_smtp:
            self.smtp.stop()

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def post_raw(sock: socket.socket, reader: BinaryIO, path: str, token: str, body: bytes) -> bytes:
    """One POST on a kept-alive raw socket; its status line (the answer's body is read and dropped).

    For the CPU benchmarks: no client library, so the client's own cost stays out of the figures.
    """
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    status = reader.readline()
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        if found := re.match(rb"(?i)content-length:\s*(\d+)", line):
            length = int(found[1])
    reader.read(length)
    return status
