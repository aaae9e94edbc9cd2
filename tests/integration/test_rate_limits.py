"""The tokens' rate limits as one bucket per token: the arithmetic, and the table in shared memory
that the daemon hands its intake workers, used from real processes at once."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile

import pytest

from daemon.api import ratelimit
from daemon.api.auth import BearerAuth, Grant, RateLimited
from daemon.api.ratelimit import LocalBuckets, SharedBuckets, refill_and_take

#: a child process: attach to the table on fd argv[1], say so, and once told to go (a line on
#: stdin), take argv[3] times from token argv[2] (0.001/s, bursts of BURST, at the time 0); print
#: how many were admitted
_TAKER = """
import sys
from daemon.api.ratelimit import SharedBuckets
buckets = SharedBuckets(int(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
print(sum(buckets.take(sys.argv[2], 0.001, %d, 0.0) == 0 for _ in range(int(sys.argv[3]))))
"""
BURST = 8000
_TAKER %= BURST


def _takers(buckets: SharedBuckets, token: str, tries: int, count: int) -> list[subprocess.Popen[str]]:
    """``count`` children attached to the table, each waiting to be told to go."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _TAKER, str(buckets.fd), token, str(tries)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(buckets.fd,),
        )
        for _ in range(count)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return children


def _go(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.close()


def _admitted(child: subprocess.Popen[str]) -> int:
    assert child.stdout is not None
    with child.stdout:
        admitted = int(child.stdout.read())
    assert child.wait(timeout=60) == 0
    return admitted


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    """2/s, bursts of 3: a full bucket admits; half a token means half a second to wait."""
    assert refill_and_take(3.0, 0.0, 2.0, 3, 0.0) == (2.0, 0.0, 0.0)
    tokens, wait, at = refill_and_take(0.0, 0.0, 2.0, 3, 0.25)
    assert tokens == 0.5 and wait == pytest.approx(0.25) and at == 0.25
    assert refill_and_take(0.0, 0.0, 2.0, 3, 100.0) == (2.0, 0.0, 100.0)  # refilled to the burst only


def test_a_clock_read_before_a_later_count_refills_nothing_twice() -> None:
    """1/s, burst 1, taken at 0 and 1: a request whose clock read 0.5 (it then waited for the
    lock) is refused and leaves the bucket counted at 1, so 1.5 must still wait half a second."""
    for buckets in (LocalBuckets(), SharedBuckets.create()):
        assert buckets.take("t", 1.0, 1, 0.0) == 0
        assert buckets.take("t", 1.0, 1, 1.0) == 0
        assert buckets.take("t", 1.0, 1, 0.5) == pytest.approx(1.0)
        assert buckets.take("t", 1.0, 1, 1.5) == pytest.approx(0.5)
        if isinstance(buckets, SharedBuckets):
            buckets.close()


@pytest.mark.parametrize("kind", ["local", "shared"])
def test_every_endpoint_of_a_process_takes_from_the_tokens_one_bucket(kind: str) -> None:
    """Two gates on one set of buckets spend one burst; a token without a limit has no bucket."""
    buckets = LocalBuckets() if kind == "local" else SharedBuckets.create()
    now = [0.0]
    grants = {"noisy": Grant(per_second=1.0, burst=2)}
    api, webhook = (BearerAuth(dict, lambda: grants, lambda: now[0], buckets=buckets) for _ in range(2))
    api.admit("noisy", "send")
    webhook.admit("noisy", "send")
    with pytest.raises(RateLimited) as refused:
        api.admit("noisy", "send")
    assert refused.value.retry_after_s == pytest.approx(1.0)
    api.admit("quiet", "send")  # no limit, no bucket
    now[0] = 1.0
    webhook.admit("noisy", "send")
    assert (buckets.refused("noisy"), buckets.refused("quiet"), buckets.refused("unknown")) == (1, 0, 0)
    if isinstance(buckets, SharedBuckets):
        buckets.close()


def test_processes_sharing_the_table_admit_exactly_the_burst() -> None:
    """Four processes and this one race for one token's burst, 5,000 tries each: without the
    lock, concurrent read-modify-writes would lose takes and admit more than the burst."""
    buckets = SharedBuckets.create()
    try:
        children = _takers(buckets, "shared", 5000, 4)
        for child in children:
            _go(child)
        mine = sum(buckets.take("shared", 0.001, BURST, 0.0) == 0 for _ in range(5000))
        theirs = [_admitted(child) for child in children]
        refused = buckets.refused("shared")
    finally:
        buckets.close()
    assert mine + sum(theirs) == BURST, (mine, theirs)
    assert refused == 5 * 5000 - BURST  # every refusal counted once, whichever process


def test_a_token_limited_in_one_process_is_limited_in_another() -> None:
    """The burst spent here is spent for a child attached to the table; other tokens are not."""
    buckets = SharedBuckets.create()
    try:
        assert sum(buckets.take("ci", 0.001, BURST, 0.0) == 0 for _ in range(BURST)) == BURST
        (child,) = _takers(buckets, "ci", 1, 1)
        _go(child)
        assert _admitted(child) == 0  # the burst was spent here
        assert buckets.take("other", 0.001, BURST, 0.0) == 0  # another token has its own bucket
    finally:
        buckets.close()


def test_a_full_table_limits_new_names_per_process_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two slots, three names: the third is limited in this process alone, and logged once."""
    monkeypatch.setattr(ratelimit, "SLOTS", 2)
    monkeypatch.setattr(ratelimit, "SIZE", ratelimit._HEADER.size + 2 * ratelimit._SLOT.size)
    buckets = SharedBuckets.create()
    try:
        assert buckets.take("a", 1.0, 1, 0.0) == 0
        assert buckets.take("b", 1.0, 1, 0.0) == 0
        with caplog.at_level(logging.ERROR):
            assert buckets.take("c", 1.0, 1, 0.0) == 0
            assert buckets.take("c", 1.0, 1, 0.0) > 0  # still limited, in this process
        assert buckets.take("c", 1.0, 1, 0.0) > 0
        assert caplog.text.count("rate-limit table is full") == 1  # said once, not per request
        assert buckets.refused("c") == 2
        assert buckets.take("a", 1.0, 1, 0.0) > 0  # the names already placed keep their slots
    finally:
        buckets.close()


def test_without_memfd_an_unlinked_file_is_shared_as_well(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sandbox that refuses memfd_create: the table is an unlinked temporary file instead."""

    def refused(name: str, flags: int = 0) -> int:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "memfd_create", refused)
    buckets = SharedBuckets.create()
    try:
        assert os.fstat(buckets.fd).st_nlink == 0  # no name on disk
        assert sum(buckets.take("t", 0.001, BURST, 0.0) == 0 for _ in range(BURST)) == BURST
        (child,) = _takers(buckets, "t", 1, 1)
        _go(child)
        assert _admitted(child) == 0
    finally:
        buckets.close()


def test_a_closed_table_refuses_use_and_closes_once() -> None:
    buckets = SharedBuckets.create()
    buckets.close()
    buckets.close()  # a second close must not close whatever now has that descriptor number
    with pytest.raises(ValueError, match="closed"):
        buckets.take("t", 1.0, 1, 0.0)


def test_a_descriptor_that_is_no_table_is_refused() -> None:
    """A file of the wrong size, or of the right size without the table's header."""
    with tempfile.TemporaryFile() as file:
        with pytest.raises(ValueError, match="not a rate-limit table"):
            SharedBuckets(file.fileno())
        os.ftruncate(file.fileno(), ratelimit.SIZE)
        with pytest.raises(ValueError, match="no rate-limit table"):
            SharedBuckets(file.fileno())
