"""CPU time the daemon spends per webhook delivery in outage mode.

Where ``bench/vs_alertmanager.py`` gives a wall-clock rate on a shared machine, this counts the
daemon process's CPU time (user + system, all threads, from ``/proc``) per delivered alert.
``backchannel run`` is started as a process with the benchmark config (SQLite, ``synchronous=FULL``),
the provider forced into outage and the webhook backup channel pointed at ``vs_alertmanager``'s
receiver (a process of its own, not counted). Each run submits N critical alerts in batches of 100
over one keep-alive connection (so intake is a small share) and counts the daemon's CPU from the
first request until the receiver has all N.

Printed per run and as medians: CPU µs per delivered alert (the whole process, and the event loop
thread alone) and delivered alerts/s (first request to last arrival). After the runs the same
number of warning alerts, which the outage plan holds, are submitted the same way: their CPU is
intake alone, so the difference is what delivery costs. The kernel counts CPU in 10 ms ticks, so
2,000 alerts resolve 5 µs.

``--profile`` instead samples every thread of the daemon with py-spy (``pip install py-spy`` into
the venv) over one run and prints where the time goes: functions by own samples, by samples
including callees, and by component. py-spy counts a thread waiting for the GIL as busy; with
``--gil`` it samples only the thread holding it (Python's own work, not SQLite's, which runs
without the GIL). ``--raw FILE`` keeps the collapsed stacks.

    .venv/bin/python bench/delivery_cpu.py [--alerts 2000] [--runs 5] [--profile [--gil]]
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DaemonUnderTest, cpu_seconds, post_raw
from bench.vs_alertmanager import BC_ALERT, BC_HEAD, Receiver

PATH = "/v1/intake/alertmanager"
BATCH = 100


@dataclass(frozen=True)
class Run:
    total_us: float
    loop_us: float
    per_s: float
    #: thread id -> CPU µs per alert
    threads: dict[int, float]


def cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds so far: the main thread (the event loop), and the whole process."""
    return cpu_seconds(f"/proc/{pid}/task/{pid}/stat"), cpu_seconds(f"/proc/{pid}/stat")


def threads_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds so far of each live thread."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[int(task.name)] = cpu_seconds(str(task / "stat"))
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return found


def thread_names(pid: int) -> dict[int, str]:
    """Python's names of the threads (``py-spy dump``), or none without py-spy."""
    spy = _py_spy()
    if spy is None:
        return {}
    out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True).stdout
    return {int(m[1]): m[2] for m in re.finditer(r'^Thread (\d+) \([^)]*\): "([^"]*)"', out, re.M)}


def _py_spy() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def submit(port: int, token: str, ids: list[str], severity: str) -> None:
    """POST the alerts ``BATCH`` per request on one keep-alive connection, each request answered 202."""
    alert = BC_ALERT.replace('"severity":"critical"', f'"severity":"{severity}"')
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reader = sock.makefile("rb")
        for start in range(0, len(ids), BATCH):
            body = (
                BC_HEAD + ",".join(alert.replace("@ID@", i) for i in ids[start : start + BATCH]) + "]}"
            ).encode()
            status = post_raw(sock, reader, PATH, token, body)
            if not status.startswith(b"HTTP/1.1 202"):
                raise RuntimeError(f"batch at {start}: {status.decode().strip()}")


def await_all(receiver: Receiver, ids: set[str], timeout_s: float = 300) -> float:
    """Poll the receiver until every id arrived; the last arrival (time.monotonic)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while not ids <= seen.keys():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids - seen.keys())} of {len(ids)} alerts never arrived")
        time.sleep(0.02)
        seen |= receiver.take()
    return max(seen[i] for i in ids)


def one_run(daemon: DaemonUnderTest, receiver: Receiver, tag: str, alerts: int) -> Run:
    assert daemon.proc is not None
    ids = [f"{tag}-{i}" for i in range(alerts)]
    receiver.take()  # forget anything left over
    threads0 = threads_cpu_s(daemon.proc.pid)
    loop0, total0 = cpu_s(daemon.proc.pid)
    started = time.monotonic()
    submit(daemon.api_port, daemon.token, ids, "critical")
    last = await_all(receiver, set(ids))
    loop1, total1 = cpu_s(daemon.proc.pid)
    threads = {
        tid: (s - threads0.get(tid, 0.0)) / alerts * 1e6 for tid, s in threads_cpu_s(daemon.proc.pid).items()
    }
    return Run(
        (total1 - total0) / alerts * 1e6, (loop1 - loop0) / alerts * 1e6, alerts / (last - started), threads
    )


def intake_alone(daemon: DaemonUnderTest, alerts: int) -> Run:
    """The same submission with warnings, which the outage plan holds: no delivery at all."""
    assert daemon.proc is not None
    ids = [f"held-{i}" for i in range(alerts)]
    loop0, total0 = cpu_s(daemon.proc.pid)
    started = time.monotonic()
    submit(daemon.api_port, daemon.token, ids, "warning")
    time.sleep(0.2)  # the dispatcher's pass after the last accept looks at the outbox and finds nothing
    loop1, total1 = cpu_s(daemon.proc.pid)
    per_s = alerts / (time.monotonic() - started)
    return Run((total1 - total0) / alerts * 1e6, (loop1 - loop0) / alerts * 1e6, per_s, {})


def force_outage(daemon: DaemonUnderTest) -> None:
    forced = httpx.post(
        f"{daemon.url}/v1/provider/override",
        json={"state": "outage", "reason": "benchmark"},
        headers={"Authorization": f"Bearer {daemon.token}"},
    )
    forced.raise_for_status()


def measure(daemon: DaemonUnderTest, receiver: Receiver, args: argparse.Namespace) -> None:
    one_run(daemon, receiver, "warmup", min(args.alerts, 500))
    runs = []
    for n in range(args.runs):
        runs.append(one_run(daemon, receiver, f"r{n}", args.alerts))
        r = runs[-1]
        print(
            f"  run {n + 1}: {r.total_us:,.0f} µs per delivered alert "
            f"({r.loop_us:,.0f} on the event loop), {r.per_s:,.0f} delivered/s"
        )
    assert daemon.proc is not None
    names = thread_names(daemon.proc.pid)
    print("by thread, µs per delivered alert (medians):")
    for tid in sorted(runs[0].threads, key=lambda t: -runs[0].threads[t]):
        median = statistics.median(r.threads.get(tid, 0.0) for r in runs)
        if median > 0:
            print(f"  {names.get(tid, str(tid)):20} {median:8,.0f}")
    intake = intake_alone(daemon, args.alerts)
    total = statistics.median(r.total_us for r in runs)
    loop = statistics.median(r.loop_us for r in runs)
    rate = statistics.median(r.per_s for r in runs)
    print(
        f"median of {args.runs} runs of {args.alerts} alerts ({BATCH} per request): "
        f"{total:,.0f} µs CPU per delivered alert ({loop:,.0f} µs on the event loop), {rate:,.0f} delivered/s"
    )
    print(
        f"intake alone (held warnings, one run): {intake.total_us:,.0f} µs per alert "
        f"({intake.loop_us:,.0f} on the event loop); delivery alone about {total - intake.total_us:,.0f} µs"
    )


# --- --profile: py-spy over every thread -----------------------------------------------------------

#: path fragment -> component; the first that matches a sample's innermost project or library frame
COMPONENTS = (
    ("daemon/store/", "store (SQLite transactions, codec, writer)"),
    ("sqlite3", "store (SQLite transactions, codec, writer)"),
    ("channels/http1", "webhook client (channels/http1.py)"),
    ("h11/", "webhook client (channels/http1.py)"),
    ("channels/", "channels (webhook body, signing, address guard)"),
    ("daemon/dispatcher", "dispatcher, outcomes, rendering, digesting"),
    ("daemon/claiming", "dispatcher, outcomes, rendering, digesting"),
    ("daemon/outcomes", "dispatcher, outcomes, rendering, digesting"),
    ("daemon/rendering", "dispatcher, outcomes, rendering, digesting"),
    ("daemon/digesting", "dispatcher, outcomes, rendering, digesting"),
    ("daemon/rerouting", "dispatcher, outcomes, rendering, digesting"),
    ("logging/", "logging"),
    ("daemon/logs", "logging"),
    ("prometheus_client/", "metrics"),
    ("daemon/metrics", "metrics"),
    ("uvicorn/", "HTTP server and intake"),
    ("daemon/api/", "HTTP server and intake"),
    ("daemon/intake/", "HTTP server and intake"),
    ("daemon/", "daemon, other"),
    ("asyncio/", "asyncio, thread hand-offs"),
    ("concurrent/", "asyncio, thread hand-offs"),
    ("threading.py", "asyncio, thread hand-offs"),
    ("queue.py", "asyncio, thread hand-offs"),
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def profile(daemon: DaemonUnderTest, receiver: Receiver, args: argparse.Namespace) -> None:
    assert daemon.proc is not None
    spy = _py_spy()
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    one_run(daemon, receiver, "warmup", min(args.alerts, 500))
    out = daemon.workdir / "profile.txt"
    argv = [spy, "record", "--pid", str(daemon.proc.pid), "--rate", str(args.rate), "--format", "raw"]
    argv += ["--threads", "--output", str(out), *(["--gil"] if args.gil else [])]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    run = one_run(daemon, receiver, "profiled", args.alerts)
    recorder.send_signal(signal.SIGINT)
    _, err = recorder.communicate(timeout=60)
    if not out.exists():
        raise RuntimeError(f"py-spy wrote no profile: {err.decode()}")
    if args.raw is not None:
        shutil.copy(out, args.raw)
    inflated = f"{run.total_us:,.0f} µs per delivered alert (inflated by sampling), {run.per_s:,.0f}/s"
    print(f"profiled run: {inflated}")
    report(out.read_text().splitlines(), args)


def report(lines: list[str], args: argparse.Namespace) -> None:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], [_short(f) for f in frames[1:]]
        total += count
        threads[thread] += count
        if frames:
            own[frames[-1]] += count
            parts[_component(stack)] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"\n{total} samples at {args.rate}/s; by thread:")
    for thread, n in threads.most_common():
        print(f"  {n / total:6.1%}  {thread}")
    for title, counts in (("own samples", own), ("samples including callees", inclusive)):
        print(f"\nfunctions by {title}:")
        for frame, n in counts.most_common(args.top):
            print(f"  {n / total:6.1%}  {frame}")
    print("\nby component (the innermost frame that names one):")
    for name, n in parts.most_common():
        print(f"  {n / total:6.1%}  {name}")


def _short(frame: str) -> str:
    found = _FRAME.match(frame)
    if found is None:
        return frame
    path = found["file"]
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{found['func']} ({path})"


def _component(stack: str) -> str:
    for frame in reversed(stack.split(";")[1:]):
        for fragment, name in COMPONENTS:
            if fragment in frame:
                return name
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="sample the daemon with py-spy over one run")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second (--profile)")
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL (--profile)"
    )
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here (--profile)")
    parser.add_argument("--top", type=int, default=30, help="functions listed (--profile)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Receiver() as receiver,
        DaemonUnderTest(Path(tmp), routes="failover", hook_url=receiver.url) as daemon,
    ):
        force_outage(daemon)
        if args.profile:
            profile(daemon, receiver, args)
        else:
            measure(daemon, receiver, args)


if __name__ == "__main__":
    main()
