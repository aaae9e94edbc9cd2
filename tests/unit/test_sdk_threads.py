"""The SDK channels' threads (channels/threads.py): a deadline from a call's start, and a call that
never found a thread is never run."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from channels.threads import CallTimedOut, SdkThreads


async def test_a_call_that_waited_past_its_deadline_for_a_thread_never_runs() -> None:
    """One thread, held by a call that hangs: the next call is dropped unstarted at its deadline
    (a timed-out send must not post later because it merely waited its turn)."""
    threads = SdkThreads("t", timeout_s=0.2, workers=1)
    begun, release, ran = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        begun.set()
        release.wait(30)

    holding = asyncio.create_task(threads.run(hold))
    await asyncio.to_thread(begun.wait, 30)
    with pytest.raises(CallTimedOut, match="no thread free"):
        await threads.run(ran.set)
    release.set()
    with contextlib.suppress(CallTimedOut):  # it had started: answered, or past its own deadline
        await holding
    assert await threads.run(lambda: 42) == 42
    assert not ran.is_set()
    threads.close()


async def test_the_deadline_counts_from_the_start_of_the_call() -> None:
    """A call that waited its turn gets its whole deadline once a thread takes it."""
    threads = SdkThreads("t", timeout_s=1.0, workers=1)
    first_started, release = threading.Event(), threading.Event()

    def first() -> str:
        first_started.set()
        release.wait(30)
        return "first"

    one = asyncio.create_task(threads.run(first))
    two = asyncio.create_task(threads.run(lambda: "second"))
    await asyncio.to_thread(first_started.wait, 30)
    release.set()
    assert (await one, await two) == ("first", "second")
    threads.close()


async def test_an_error_in_the_call_is_raised_to_the_caller() -> None:
    threads = SdkThreads("t", timeout_s=1.0)
    with pytest.raises(ZeroDivisionError):
        await threads.run(lambda: 1 / 0)
    threads.close()
