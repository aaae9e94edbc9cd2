"""The vendor SDK channels' own threads and deadlines: a Slack that hangs or trickles its answer
holds up neither the SMS channel nor its own delivery past the deadline (channels/threads.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from channels.base import ChannelError
from channels.slack import SlackChannel
from channels.sms import SmsChannel
from tests.stand_ins.slack import SlackStandIn, serve
from tests.stand_ins.twilio import TwilioStandIn
from tests.stand_ins.twilio import serve as serve_twilio
from tests.support import outbound_message

TOKEN = "xoxb-1111-2222-threads-test-token"
ACCOUNT_SID = "AC" + "c3" * 16
AUTH_TOKEN = "threads-test-auth-token-0123456789"


@asynccontextmanager
async def raw_server(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A server on 127.0.0.1 that answers each connection with ``answer``; its base URL."""
    tasks: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await answer(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/api/"
    finally:
        for task in tasks:
            task.cancel()
        server.close()


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1 << 16)
    await asyncio.Event().wait()


async def trickles(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An answer a byte every 0.2 s: each read is well within the SDK's timeout, the whole never."""
    await reader.read(1 << 16)
    body = b'{"ok": true, "channel": "C0OPS", "ts": "1.000001"}' + b" " * 2000
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    for byte in answer + body:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.2)


async def test_a_slack_that_hangs_does_not_hold_up_the_sms_channel() -> None:
    """Forty Slack sends to a server that never answers, each to its own destination; an SMS sent
    meanwhile goes out while they all still wait (they shared the loop's default threads, at most
    32 of them, six on a two-core host)."""
    async with (
        raw_server(never_answers) as hanging,
        serve_twilio(TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN)) as twilio,
    ):
        slack = SlackChannel("slack", token=TOKEN, targets=("#ops",), base_url=hanging, timeout_s=2, pace=100)
        sms = SmsChannel(
            "sms",
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            from_number="+14155550100",
            recipients=("+14155552671",),
            base_url=twilio.base_url,
            segments_per_s=100,
        )
        stuck = [
            asyncio.create_task(slack.send(outbound_message(n, labels={"slack_thread_ts": f"C{n}:1.0"})))
            for n in range(40)
        ]
        await asyncio.sleep(0)  # every Slack send has reached its thread
        receipt = await asyncio.wait_for(sms.send(outbound_message(99)), 30)
        assert receipt.detail == "sent to 1 of 1"
        assert not any(task.done() for task in stuck)
        await asyncio.gather(*stuck, return_exceptions=True)
        await slack.aclose()
        await sms.aclose()


async def test_a_slack_answer_trickling_in_fails_at_the_deadline() -> None:
    """urllib's timeout bounds each read, so an answer a byte at a time kept a send going for
    minutes, past its claim's lease, and the delivery was claimed and posted again: the whole call
    has a deadline a second past timeout_s, then it is a transient service fault."""
    async with raw_server(trickles) as slow:
        slack = SlackChannel("slack", token=TOKEN, targets=("#ops",), base_url=slow, timeout_s=1, pace=100)
        with pytest.raises(ChannelError) as caught:
            await asyncio.wait_for(slack.send(outbound_message(1)), 60)
        await slack.aclose()
    assert "did not answer" in str(caught.value)
    assert (caught.value.permanent, caught.value.service_fault) == (False, True)


async def test_a_second_claim_of_a_send_in_progress_does_not_post_again() -> None:
    """The same notification sent again while its first post still holds the destination (claimed
    again after its lease ran out) waits for it and answers its message, instead of a second post."""
    async with serve(SlackStandIn(TOKEN)) as stand_in:
        slack = SlackChannel("slack", token=TOKEN, targets=("#ops",), base_url=stand_in.base_url, pace=100)
        message = outbound_message(1)
        first, second = await asyncio.gather(slack.send(message), slack.send(message))
        await slack.aclose()
    assert first.remote_id == second.remote_id
    assert len(stand_in.posts) == 1
