"""A burst under vendor rate limits: 500 critical notifications in 10 s each to Slack and SMS.

Runs the daemon in this process with the Slack and Twilio stand-ins of the test suite, which
answer 429 above 1 message (Slack) and 1 segment (SMS) per second; the channels are paced at
those rates with the default 30 s drain target. Prints the timeline of what each stand-in
received: the first delivery's latency, each digest with its count and time, the total drain
time and the 429s seen (issue 6; the test is tests/integration/test_digest_burst.py).

    .venv/bin/python bench/burst.py [--count 500] [--spread 10] [--pace 1]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.burst import BurstRun, Received, counted, run_burst


def timeline(name: str, received: list[Received], start: float) -> None:
    singles = sum(1 for r in received if r.digest is None)
    digests = [r for r in received if r.digest]
    summary = f"{len(received)} messages ({singles} single, {len(digests)} digests)"
    print(f"\n{name}: {summary}, {counted(received)} notifications counted")
    for r in received:
        what = f"digest {r.digest} of {r.count}" if r.digest else f"single #{r.number:03d}"
        print(f"  {r.at - start:6.2f} s  {what}")
    if digests:
        print(f"  e.g. {digests[0].text!r}")


def report(run: BurstRun) -> None:
    start = min(run.first_submitted.values())
    print(f"accepted: {sum(len(ids) for ids in run.ids.values())} in {run.accepted_at[-1] - start:.2f} s")
    for name, received in (("slack", run.slack), ("sms", run.sms)):
        if received:
            latency = received[0].at - run.first_submitted[name]
            print(f"{name}: first delivery {latency * 1000:.0f} ms after it was submitted")
    timeline("slack", run.slack, start)
    timeline("sms", run.sms, start)
    drained = "not drained before the deadline" if run.done_at is None else f"{run.done_at - start:.2f} s"
    print(f"\ntotal drain time: {drained}; 429s seen: slack {run.slack_429}, sms {run.sms_429}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="notifications per channel")
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which they are accepted")
    parser.add_argument("--pace", type=float, default=1.0, help="messages (SMS: segments) per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = asyncio.run(run_burst(Path(tmp), count=args.count, spread_s=args.spread, pace=args.pace))
    report(run)


if __name__ == "__main__":
    main()
