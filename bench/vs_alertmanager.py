"""backchannel next to Prometheus Alertmanager: accepted alerts/s and accept-to-webhook latency.

The same load generators and the same webhook receiver for both, both servers up at once:

1. Alertmanager (``tests/e2e/alertmanager.sh``: ``group_by: ['...']`` so every alert is its own
   group, ``group_wait: 0s``, one webhook receiver), alerts POSTed to ``/api/v2/alerts``;
2. ``backchannel run`` with the provider forced into outage and a webhook backup channel, the
   same alerts POSTed as Alertmanager webhook calls to ``/v1/intake/alertmanager``. Every alert
   is committed to SQLite (synchronous=FULL) before its 202; Alertmanager keeps alerts in memory.

Throughput: wrk (closed loop, every request carries new alerts, made by a Lua ``request()``), one
alert per request and batches of 100, at ``--connections``; one per request also at each of
``--sweep``'s connection counts, and each side's best rate of them. A server that commits before
it answers is bound by its latency at few connections and by its CPU at many; one that answers
from memory peaks at fewer connections. Both readings get a verdict: equal connections, and each
side at its own best. Latency: a raw-socket open loop at a fixed rate, from the moment a request
is written to the moment the receiver (a separate process) has the alert.

Rounds: each phase runs on one side and then at once on the other, the side that goes first
alternating by round, and ``--rounds`` (default 3) such rounds. Other tenants of a shared host
change this machine's speed by up to half within minutes; a ratio taken from two runs seconds
apart is the comparison, and the verdict is the median of the rounds' ratios (each listed).

    .venv/bin/python bench/vs_alertmanager.py [--rounds 3] [--seconds 5] [--rate 100] [--connections 16]
                                              [--sweep 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DaemonUnderTest, free_port, percentile, tree_cpu_seconds
from bench.loadgen import WrkResult

SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "e2e" / "alertmanager.sh"
STARTS_AT = "2024-01-01T00:00:00Z"
LABELS = '{"alertname":"BenchAlert","severity":"critical","job":"bench","bench_id":"@ID@"}'
ANNOTATIONS = '{"summary":"benchmark alert","description":"' + "x" * 200 + '"}'
AM_ALERT = (
    f'{{"labels":{LABELS},"annotations":{ANNOTATIONS},"startsAt":"{STARTS_AT}","generatorURL":"http://b/"}}'
)
BC_ALERT = (
    f'{{"status":"firing","labels":{LABELS},"annotations":{ANNOTATIONS},"startsAt":"{STARTS_AT}",'
    '"endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://b/","fingerprint":"@ID@"}'
)
BC_HEAD = (
    '{"version":"4","groupKey":"{}:{}","truncatedAlerts":0,"status":"firing","receiver":"backchannel",'
    '"groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am/","alerts":['
)


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    path: str
    token: str
    #: the request body for these alerts: a template with @ID@ per alert, split as head, alert, tail
    head: str
    alert: str
    tail: str

    def body(self, ids: list[str]) -> bytes:
        alerts = ",".join(self.alert.replace("@ID@", i) for i in ids)
        return (self.head + alerts + self.tail).encode()


def alertmanager_target(port: int) -> Target:
    return Target("Alertmanager", port, "/api/v2/alerts", "unused", "[", AM_ALERT, "]")


def backchannel_target(port: int, token: str) -> Target:
    return Target("backchannel", port, "/v1/intake/alertmanager", token, BC_HEAD, BC_ALERT, "]}")


# --- the webhook receiver: its own process, so the load generator never delays it ------------------

_ID = re.compile(rb'"bench_id":\s*"([^"]+)"')


def _receiver(port: int, control: Connection) -> None:
    import uvloop

    # The loop thread records into box[0]; the control thread swaps in a fresh dict (one atomic
    # reference assignment under the GIL), so no arrival is lost or counted twice.
    box: list[dict[bytes, float]] = [{}]

    class Http(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's transports are not asyncio.Transport subclasses, but have write()
            self.transport, self.buffer = cast(asyncio.Transport, transport), b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                found = re.search(rb"(?i)content-length:\s*(\d+)", self.buffer[:end])
                total = end + 4 + (int(found[1]) if found else 0)
                if len(self.buffer) < total:
                    return
                now, seen = time.monotonic(), box[0]
                for i in _ID.findall(self.buffer[end + 4 : total]):
                    seen.setdefault(i, now)
                self.buffer = self.buffer[total:]
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def answer() -> None:
        while control.recv() == "take":
            taken, box[0] = box[0], {}
            control.send({k.decode(): v for k, v in taken.items()})

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", port)
        threading.Thread(target=answer, daemon=True).start()
        control.send("ready")
        await server.serve_forever()

    uvloop.run(serve())


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self._control, theirs = multiprocessing.Pipe()
        self._proc = multiprocessing.get_context("spawn").Process(
            target=_receiver, args=(self.port, theirs), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Receiver:
        self._proc.start()
        if not self._control.poll(30) or self._control.recv() != "ready":
            raise RuntimeError("the webhook receiver did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.join(10)

    def take(self) -> dict[str, float]:
        """Alert id to arrival time (time.monotonic) for everything received since the last take."""
        self._control.send("take")
        if not self._control.poll(30):
            raise RuntimeError("the webhook receiver stopped answering")
        seen: dict[str, float] = self._control.recv()
        return seen

    def wait_for(self, ids: set[str], timeout_s: float = 60) -> dict[str, float]:
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout_s
        while not ids <= seen.keys() and time.monotonic() < deadline:
            seen |= self.take()
            time.sleep(0.05)
        return seen


# --- load ----------------------------------------------------------------------------------------


def wrk_unique(target: Target, run: str, per_request: int, connections: int, seconds: float) -> WrkResult:
    """wrk whose every request carries ``per_request`` alerts never sent before."""
    alert = target.alert.replace("@ID@", '" .. ids[i] .. "')
    script = f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {target.token}"
local n = 0
request = function()
  local ids, parts = {{}}, {{}}
  for i = 1, {per_request} do
    n = n + 1
    ids[i] = "{run}-" .. n
    parts[i] = "{_lua(alert)}"
  end
  local body = [==[{target.head}]==] .. table.concat(parts, ",") .. [==[{target.tail}]==]
  return wrk.format(nil, "{target.path}", nil, body)
end
"""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        url = f"http://127.0.0.1:{target.port}{target.path}"
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", lua.name, url]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if "Non-2xx or 3xx responses" in out:
        raise RuntimeError(f"{target.name} refused requests:\n{out}")
    try:
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
        # Anchored: the "+/- Stdev" column (e.g. "62.50%") must not pass for a percentile.
        p50, p99 = (_ms(re.search(rf"^\s*{p}%\s+(\S+)", out, re.M)[1]) for p in ("50", "99"))  # type: ignore[index]
    except (TypeError, AttributeError) as exc:
        raise RuntimeError(f"unexpected wrk output against {target.name}:\n{out}") from exc
    return WrkResult(rate * per_request, p50, p99)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def _lua(text: str) -> str:
    """Escape a template for a Lua double-quoted string, keeping the ``" .. ids[i] .. "`` splices."""
    marker = '" .. ids[i] .. "'
    return marker.join(part.replace("\\", "\\\\").replace('"', '\\"') for part in text.split(marker))


async def open_loop(target: Target, run: str, rate: float, seconds: float) -> dict[str, float]:
    """Alert id to the time (monotonic) its request was written; one alert per request, fixed rate."""
    sent: dict[str, float] = {}
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
        while (alert_id := await queue.get()) is not None:
            body = target.body([alert_id])
            head = (
                f"POST {target.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {target.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            sent[alert_id] = time.monotonic()
            writer.write(head.encode() + body)
            reply = await reader.readuntil(b"\r\n\r\n")
            if not reply.startswith(b"HTTP/1.1 20"):
                raise RuntimeError(reply.decode())
            await reader.readexactly(int(re.search(rb"(?i)content-length:\s*(\d+)", reply)[1]))  # type: ignore[index]
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(16)]
    start = time.monotonic() + 0.2
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        queue.put_nowait(f"{run}-{i}")
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return sent


# --- one target ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    one_per_s: float
    batch_per_s: float
    #: alerts that reached the receiver per second, from the start of the load to the last webhook
    one_delivered_per_s: float
    batch_delivered_per_s: float
    #: CPU time of the target's processes per alert, accepting and delivering, one per request
    one_cpu_us: float
    p50_ms: float
    p99_ms: float
    missing: int
    #: accepted alerts/s one per request at each of ``--sweep``'s connection counts
    sweep: dict[int, float] = field(default_factory=dict)

    @property
    def one_peak_per_s(self) -> float:
        """The best one-per-request rate over ``--connections`` and the sweep."""
        return max([self.one_per_s, *self.sweep.values()])


@dataclass(frozen=True)
class Side:
    """One server under test, started: where to send, its CPU so far, whether its queue is empty."""

    target: Target
    #: CPU seconds the target's processes have used so far
    cpu: Callable[[], float]
    #: nothing queued or being sent (Alertmanager is never asked: it reports no queue)
    settled: Callable[[], bool] = lambda: True


def measure_rounds(
    sides: tuple[Side, Side], receiver: Receiver, args: argparse.Namespace
) -> list[tuple[Figures, Figures]]:
    """``args.rounds`` rounds; in each, every phase runs on both sides back to back, the side that
    goes first alternating by round, so a change in the machine's speed (other tenants on the
    host) falls on both sides of a ratio alike. Each round's figures, in ``sides``' order."""
    rounds = []
    for n in range(args.rounds):
        order = sides if n % 2 == 0 else sides[::-1]
        fields: dict[str, dict[str, Any]] = {side.target.name: {"sweep": {}} for side in sides}
        for connections in [args.connections, *(c for c in args.sweep if c != args.connections)]:
            for side in order:
                accepted, delivered, cpu_us = _phase(side, receiver, f"r{n}", 1, connections, args)
                if connections == args.connections:
                    fields[side.target.name].update(
                        one_per_s=accepted.requests_per_s, one_delivered_per_s=delivered, one_cpu_us=cpu_us
                    )
                else:
                    fields[side.target.name]["sweep"][connections] = accepted.requests_per_s
        for side in order:
            accepted, delivered, _ = _phase(side, receiver, f"r{n}", 100, args.connections, args)
            fields[side.target.name].update(
                batch_per_s=accepted.requests_per_s, batch_delivered_per_s=delivered
            )
        for side in order:
            fields[side.target.name].update(_latency(side, receiver, f"lat{n}", args))
        first, second = (Figures(**fields[side.target.name]) for side in sides)
        rounds.append((first, second))
    return rounds


def _latency(side: Side, receiver: Receiver, run: str, args: argparse.Namespace) -> dict[str, Any]:
    sent = asyncio.run(open_loop(side.target, run, args.rate, args.seconds))
    seen = receiver.wait_for(set(sent))
    latencies = [seen[i] - t for i, t in sent.items() if i in seen]
    if not latencies:
        raise RuntimeError(f"no webhook arrived from {side.target.name}")
    return {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "missing": len(sent) - len(latencies),
    }


def _phase(
    side: Side, receiver: Receiver, tag: str, per_request: int, connections: int, args: argparse.Namespace
) -> tuple[WrkResult, float, float]:
    """wrk for ``args.seconds``, then wait until the webhooks stop: accepted/s, delivered/s, and
    the target's CPU µs per delivered alert (accepting and delivering it)."""
    target = side.target
    started, cpu_before = time.monotonic(), side.cpu()
    run = f"{tag}n{per_request}c{connections}"
    accepted = wrk_unique(target, run, per_request, connections, args.seconds)
    under_load = side.cpu() - cpu_before
    count, last = _drain(receiver, side.settled, run)
    delivered = count / (last - started) if count else 0.0
    cpu_us = (side.cpu() - cpu_before) / count * 1e6 if count else float("nan")
    print(
        f"  {target.name}, {per_request} per request, {connections} connections: "
        f"{accepted.requests_per_s:,.0f} alerts/s accepted, "
        f"{count:,} delivered in {last - started:.1f} s; CPU {under_load / args.seconds:.0%} of one core "
        f"under the load, {cpu_us:,.0f} µs per alert",
        flush=True,
    )
    return accepted, delivered, cpu_us


def _drain(
    receiver: Receiver, settled: Callable[[], bool], run: str, quiet_s: float = 2.0, timeout_s: float = 300
) -> tuple[int, float]:
    """Alerts of ``run`` received until none came for ``quiet_s`` and ``settled()``, and the last
    one's arrival.

    ``settled`` asks the target whether anything is still queued: backchannel may pause delivery
    for longer than ``quiet_s`` while intake takes the machine, and must not be cut short then.
    Only this run's alerts count: Alertmanager sends the resolution of an earlier phase's alerts
    once they time out (``resolve_timeout``, 5 minutes), in the middle of a later round.
    """
    count, last, deadline = 0, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if seen := {i: t for i, t in receiver.take().items() if i.startswith(f"{run}-")}:
            count, last = count + len(seen), max(seen.values())
        elif time.monotonic() - last >= quiet_s and settled():
            break
        time.sleep(0.1)
    return count, last


@contextmanager
def alertmanager(receiver: Receiver, workdir: Path) -> Iterator[Side]:
    port = free_port()
    env = dict(os.environ, AM_GROUP_INTERVAL="5m")
    subprocess.run([str(SCRIPT), "start", str(port), str(workdir), receiver.url], check=True, env=env)
    pid = int((workdir / "alertmanager.pid").read_text())
    try:
        yield Side(alertmanager_target(port), lambda: tree_cpu_seconds(pid))
    finally:
        subprocess.run([str(SCRIPT), "stop", str(workdir)], check=True)


@contextmanager
def backchannel(receiver: Receiver, workdir: Path, workers: int) -> Iterator[Side]:
    with DaemonUnderTest(workdir, routes="failover", hook_url=receiver.url, workers=workers) as daemon:
        forced = httpx.post(
            f"{daemon.url}/v1/provider/override",
            json={"state": "outage", "reason": "benchmark"},
            headers={"Authorization": f"Bearer {daemon.token}"},
        )
        forced.raise_for_status()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        yield Side(
            backchannel_target(daemon.intake_port, daemon.token),
            lambda: tree_cpu_seconds(pid),
            lambda: _empty(daemon),
        )


def _empty(daemon: DaemonUnderTest) -> bool:
    """Nothing waiting or being sent in backchannel's outbox."""
    status = httpx.get(
        f"{daemon.url}/v1/status", headers={"Authorization": f"Bearer {daemon.token}"}, timeout=10
    ).json()
    queue = status["queue"]
    return not queue["sending_now"] and not any(queue["deliveries"].values())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0, help="alerts/s offered for the latency run")
    parser.add_argument("--connections", type=int, default=16, help="wrk's connections for the main rows")
    parser.add_argument(
        "--sweep",
        type=_connection_counts,
        default=[64],
        help="more connection counts for the one-per-request rate, comma-separated ('' for none)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="backchannel's intake workers (intake.workers.count; 0: none)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of every phase on both sides, alternating which goes first; ratios are per round",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Receiver() as receiver:
        (Path(tmp) / "am").mkdir()
        (Path(tmp) / "bc").mkdir()
        with (
            alertmanager(receiver, Path(tmp) / "am") as am,
            backchannel(receiver, Path(tmp) / "bc", args.workers) as bc,
        ):
            rounds = measure_rounds((am, bc), receiver, args)
    report(rounds, args)


def _connection_counts(text: str) -> list[int]:
    counts = sorted({int(n) for n in text.split(",") if n.strip()})
    if any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError("connection counts must be at least 1")
    return counts


def report(rounds: list[tuple[Figures, Figures]], args: argparse.Namespace) -> None:
    """The table, with backchannel/Alertmanager ratios against the goals of issue 5.

    Each side's figure is its median over the rounds; the ratio is the median of the rounds' own
    ratios (each from runs minutes apart), and each round's ratio is listed after it.
    """
    lat = f"at {args.rate:g}/s (ms)"
    one = f"accepted alerts/s, one per request, {args.connections} conns"
    rows: list[tuple[str, Callable[[Figures], float], str, str]] = [
        (one, lambda f: f.one_per_s, "{:,.0f}", ">= 1"),
        *[
            (f"  the same, {c} connections", lambda f, c=c: f.sweep[c], "{:,.0f}", "")
            for c in args.sweep
            if c != args.connections
        ],
        ("  each side's best of these", lambda f: f.one_peak_per_s, "{:,.0f}", ">= 1"),
        ("accepted alerts/s, batches of 100", lambda f: f.batch_per_s, "{:,.0f}", ">= 1"),
        ("delivered alerts/s, one per request", lambda f: f.one_delivered_per_s, "{:,.0f}", ""),
        ("delivered alerts/s, batches of 100", lambda f: f.batch_delivered_per_s, "{:,.0f}", ""),
        ("CPU µs per alert, one per request", lambda f: f.one_cpu_us, "{:,.0f}", ""),
        (f"accept-to-webhook p50 {lat}", lambda f: f.p50_ms, "{:.1f}", "<= 3"),
        (f"accept-to-webhook p99 {lat}", lambda f: f.p99_ms, "{:.1f}", "<= 3"),
    ]
    print(f"\n{'':40} {'Alertmanager':>13} {'backchannel':>12} {'ratio':>7}  {'goal':14} each round")
    for name, get, fmt, goal in rows:
        ratios = [get(bc) / get(am) if get(am) else float("nan") for am, bc in rounds]
        ratio = statistics.median(ratios)
        am_figure = statistics.median(get(am) for am, _ in rounds)
        bc_figure = statistics.median(get(bc) for _, bc in rounds)
        met = ratio >= 1 if goal == ">= 1" else ratio <= 3
        verdict = "" if not goal else f"{goal} {'met' if met else 'MISSED'}"
        each = " / ".join(f"{r:.2f}" for r in ratios)
        figures = f"{fmt.format(am_figure):>13} {fmt.format(bc_figure):>12}"
        print(f"{name:40} {figures} {ratio:>7.2f}  {verdict:14} {each}")
    missing = [(am.missing, bc.missing) for am, bc in rounds if am.missing or bc.missing]
    if missing:
        print(f"alerts never delivered (Alertmanager, backchannel), by round: {missing}")
    print(json.dumps([{"alertmanager": am.__dict__, "backchannel": bc.__dict__} for am, bc in rounds]))


if __name__ == "__main__":
    main()
