"""Issue 6's burst: 500 critical notifications in 10 s each to Slack at 1/s and SMS at 1 segment/s.

One scenario run (a module fixture, about 15 s of real time) and one test per promise. The
stand-ins answer 429 above the paced rate, so "no 429" proves the pacing; counts are read back
from what the stand-ins received, and checked against the outbox's attempt trails.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest

from channels.gsm import segment_count
from tests.integration.burst import BurstRun, Received, counted, run_burst

COUNT = 500
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory) -> BurstRun:
    """The scenario runs once, in its own event loop, for all the tests below."""
    return asyncio.run(run_burst(tmp_path_factory.mktemp("burst"), count=COUNT, spread_s=10.0, pace=1.0))


def _both(run: BurstRun) -> dict[str, list[Received]]:
    return {"slack": run.slack, "sms": run.sms}


def test_first_notification_arrives_within_a_second(burst: BurstRun) -> None:
    """The first message on each channel arrives within 1 s of submitting (so of accepting) the first."""
    for channel, received in _both(burst).items():
        assert received, channel
        assert received[0].at - burst.first_submitted[channel] < 1.0, channel
        assert received[0].digest is None, "the first critical one goes on its own"


def test_no_rate_limit_answers(burst: BurstRun) -> None:
    """Neither stand-in answered 429: sends stayed within 1 message (or segment) per second."""
    assert (burst.slack_429, burst.sms_429) == (0, 0)


def test_every_notification_counted_exactly_once(burst: BurstRun) -> None:
    """The counts of what the stand-ins received add up to each burst, singles never repeated."""
    for channel, received in _both(burst).items():
        assert counted(received) == COUNT, channel
        singles = [r.number for r in received if r.digest is None]
        assert len(singles) == len(set(singles)), channel
        assert any(r.digest for r in received), f"{channel}: a burst this size must be digested"


def test_trail_names_the_digest_that_carried_each(burst: BurstRun) -> None:
    """Each notification has one delivered attempt; a digest's count is how many trails name it."""
    for channel, received in _both(burst).items():
        carried: Counter[str] = Counter()
        for nid in burst.ids[channel]:
            delivered = [detail for outcome, detail in burst.trails[nid] if outcome == "delivered"]
            assert len(delivered) == 1, (nid, burst.trails[nid])
            if found := re.match(r"in digest (D\w+) of \d+", delivered[0]):
                carried[found.group(1)] += 1
        assert carried == Counter({r.digest: r.count for r in received if r.digest}), channel


def test_each_sms_digest_fits_one_segment(burst: BurstRun) -> None:
    """Every SMS digest is one GSM-7 segment (the configured budget)."""
    for sms in burst.sms:
        if sms.digest:
            assert segment_count(sms.text) == 1, sms.text


def test_burst_drains_within_a_minute(burst: BurstRun) -> None:
    """Everything has arrived within 60 s of the first submission, as a few dozen messages, not 500."""
    assert burst.done_at is not None
    assert burst.done_at - min(burst.first_submitted.values()) < 60.0
    assert len(burst.slack) < 30 and len(burst.sms) < 30
