"""CPU time the daemon spends to accept one Alertmanager alert (one alert per request).

Deterministic where ``bench/vs_alertmanager.py`` is not: it counts the daemon process's CPU
time (user + system, all threads, from ``/proc``) over N requests rather than a wall-clock rate,
so it can run while other work shares the machine. ``backchannel run`` is started as a process
with the benchmark config (SQLite, synchronous=FULL) and the provider forced into outage as in
``vs_alertmanager.py``, but the alerts are ``severity: warning``, which the outage plan defers:
nothing is delivered, so the figure is intake alone (HTTP, auth, parsing, mapping, both routing
plans, the durable commit, metrics). Requests go over keep-alive raw sockets, sequentially per
connection; the client's own CPU is not counted.

Prints CPU µs per alert for each run and the median of the runs, the whole process and the event
loop (the main thread) alone; the kernel counts in 10 ms ticks, so 3,000 alerts resolve ~3 µs.
``--profile`` instead profiles the event loop over one run with cProfile (the functions that cost
the most, and the time by component). ``--in-process`` times the intake's own code alone (the
webhook endpoint, mapping, both routing plans, ids, metrics) driven in-process with a store that
commits nothing: no server, no sockets, no threads, so it is stable to about 1 %.

    .venv/bin/python bench/intake_cpu.py [--alerts 3000] [--runs 5] [--connections 1] [--profile]
    .venv/bin/python bench/intake_cpu.py --in-process --alerts 20000
"""

from __future__ import annotations

import argparse
import base64
import os
import pstats
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CONFIG, ROUTES, cpu_seconds, free_port, post_raw
from bench.intake_hotpath import in_process
from daemon.demo.standins import SmtpProvider

PATH = "/v1/intake/alertmanager"
# The same payload as vs_alertmanager.py (one alert, 200-character description), but a warning.
ALERT = (
    '{"status":"firing","labels":{"alertname":"BenchAlert","severity":"warning","job":"bench",'
    '"bench_id":"@ID@"},"annotations":{"summary":"benchmark alert","description":"' + "x" * 200 + '"},'
    '"startsAt":"2024-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://b/",'
    '"fingerprint":"@ID@"}'
)
BODY = (
    '{"version":"4","groupKey":"{}:{}","truncatedAlerts":0,"status":"firing","receiver":"backchannel",'
    '"groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am/","alerts":['
    + ALERT
    + "]}"
)
# Runs the daemon with cProfile armed by SIGUSR1 and dumped by SIGUSR2 (event loop thread only).
PROFILED = """
import cProfile, os, signal, sys
profile, out = cProfile.Profile(), sys.argv.pop()
def dump(*_):
    profile.disable()
    profile.dump_stats(out + ".part")
    os.replace(out + ".part", out)  # whole or absent
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, dump)
from daemon.cli import main
sys.exit(main())
"""


class Daemon:
    """``backchannel run`` on the benchmark config, provider forced into outage."""

    def __init__(self, workdir: Path, profile_to: Path | None) -> None:
        self.workdir = workdir
        self.token = secrets.token_urlsafe(24)
        self.smtp = SmtpProvider(free_port())
        self.port = free_port()
        self.config = workdir / "bench.yaml"
        self.config.write_text(
            CONFIG.format(
                store=workdir / "bench.db",
                api_port=self.port,
                smtp_port=self.smtp.port,
                every="15s",
                hook_url="http://127.0.0.1:9/hook",
                routes=ROUTES["failover"],
            )
        )
        run = ["run", "-c", str(self.config)]
        self.argv = [sys.executable, "-m", "daemon", *run]
        if profile_to is not None:
            self.argv = [sys.executable, "-c", PROFILED, *run, str(profile_to)]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Daemon:
        self.smtp.start()
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        env = dict(os.environ, BENCH_TOKEN=self.token, BENCH_WEBHOOK_SECRET=secret)
        with (self.workdir / "daemon.log").open("wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        url, auth = f"http://127.0.0.1:{self.port}", {"Authorization": f"Bearer {self.token}"}
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "daemon.log").read_text())
            time.sleep(0.02)
        forced = {"state": "outage", "reason": "benchmark"}
        httpx.post(f"{url}/v1/provider/override", json=forced, headers=auth).raise_for_status()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
        self.smtp.stop()

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds so far: the main thread (the event loop), and the whole process."""
        assert self.proc is not None
        pid = self.proc.pid
        return cpu_seconds(f"/proc/{pid}/task/{pid}/stat"), cpu_seconds(f"/proc/{pid}/stat")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


def send(port: int, token: str, ids: list[str]) -> None:
    """POST one single-alert webhook per id on one keep-alive connection, each answered 202."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reader = sock.makefile("rb")
        for alert_id in ids:
            status = post_raw(sock, reader, PATH, token, BODY.replace("@ID@", alert_id).encode())
            if not status.startswith(b"HTTP/1.1 202"):
                raise RuntimeError(f"{alert_id}: {status.decode().strip()}")


def load(daemon: Daemon, run: str, alerts: int, connections: int) -> None:
    """``alerts`` requests spread over ``connections`` concurrent keep-alive connections."""
    ids = [f"{run}-{i}" for i in range(alerts)]
    shares = [ids[i::connections] for i in range(connections)]
    errors: list[BaseException] = []

    def worker(share: list[str]) -> None:
        try:
            send(daemon.port, daemon.token, share)
        except BaseException as exc:  # reraised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def measure(daemon: Daemon, args: argparse.Namespace) -> None:
    loop_us, total_us = [], []
    for run in range(args.runs):
        loop0, total0 = daemon.cpu_s()
        load(daemon, f"r{run}", args.alerts, args.connections)
        loop1, total1 = daemon.cpu_s()
        loop_us.append((loop1 - loop0) / args.alerts * 1e6)
        total_us.append((total1 - total0) / args.alerts * 1e6)
        print(f"  run {run + 1}: {total_us[-1]:,.0f} µs per alert ({loop_us[-1]:,.0f} on the event loop)")
    print(
        f"CPU per accepted alert, median of {args.runs} runs of {args.alerts} "
        f"({args.connections} connection(s)): {statistics.median(total_us):,.0f} µs "
        f"({statistics.median(loop_us):,.0f} µs on the event loop)"
    )


def profile(daemon: Daemon, out: Path, args: argparse.Namespace) -> None:
    daemon.signal(signal.SIGUSR1)
    load(daemon, "profiled", args.alerts, args.connections)
    daemon.signal(signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while not out.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon wrote no profile")
        time.sleep(0.05)
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    print(f"event loop time by component, µs per alert (inflated by the profiler), {args.alerts} alerts:")
    for name, seconds in sorted(components(stats).items(), key=lambda kv: -kv[1]):
        print(f"  {name:45} {seconds / args.alerts * 1e6:8.1f}")


_INTAKE = (
    "/daemon/api/",
    "/daemon/intake/",
    "/daemon/ids",
    "/daemon/metrics",
    "prometheus_client",
    "pydantic",
)
#: path fragment -> component; the first that matches names a function's own time
COMPONENTS = (
    (("/uvicorn/", "/starlette/", "/h11/", "httptools"), "HTTP server (uvicorn, httptools)"),
    (("/daemon/store/",), "store (its work on the loop)"),
    (("/daemon/core/",), "routing (daemon/core)"),
    (("/daemon/dispatcher", "/daemon/claiming", "/daemon/rendering"), "dispatcher"),
    (_INTAKE, "intake (auth, parsing, mapping, ids, metrics)"),
    (("/asyncio/", "/concurrent/", "threading.py", "uvloop"), "asyncio, futures, thread hand-offs"),
)


def components(stats: pstats.Stats) -> dict[str, float]:
    """Own time summed per component; a C built-in's time goes to the component of its caller."""
    totals: dict[str, float] = {}
    for (path, _, _), (_, _, own, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if path == "~":
            for caller, (_, _, from_caller, _) in callers.items():
                name = _component(caller[0])
                totals[name] = totals.get(name, 0.0) + from_caller
        else:
            totals[_component(path)] = totals.get(_component(path), 0.0) + own
    return totals


def _component(path: str) -> str:
    return next((name for fragments, name in COMPONENTS if any(f in path for f in fragments)), "other")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=3000, help="requests per run, one alert each")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile the event loop over one run")
    parser.add_argument("--top", type=int, default=40, help="functions listed with --profile")
    parser.add_argument("--in-process", action="store_true", help="the intake's code alone, no daemon")
    args = parser.parse_args()
    if args.in_process:
        in_process(BODY, PATH, args.alerts, args.runs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "intake.prof"
        with Daemon(Path(tmp), out if args.profile else None) as daemon:
            load(daemon, "warmup", args.warmup, args.connections)
            if args.profile:
                profile(daemon, out, args)
            else:
                measure(daemon, args)


if __name__ == "__main__":
    main()
