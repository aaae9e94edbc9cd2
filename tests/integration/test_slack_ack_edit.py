"""SlackChannel's record of what one send posted, and its edit once the escalation is acknowledged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from channels.base import Acknowledgement, ChannelError, EditsOnAck, OutboundMessage
from channels.slack import THREAD_LABEL, SlackChannel, posted
from tests.stand_ins.slack import Reply, SlackStandIn, serve
from tests.support import outbound_message

TOKEN = "xoxb-3333-4444-ack-edit-test-token"
ACK = Acknowledgement("alice", "slack", datetime(2024, 5, 1, 12, 34, tzinfo=UTC))


def _message(n: int = 1, **overrides: object) -> OutboundMessage:
    return outbound_message(n, **({"acknowledgeable": True} | overrides))


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with serve(SlackStandIn(TOKEN)) as stand_in:
        stand_in.channels["#dev"] = "C0DEV"
        yield stand_in


def _channel(stand_in: SlackStandIn) -> SlackChannel:
    return SlackChannel("slack", token=TOKEN, targets=("#ops", "#dev"), base_url=stand_in.base_url, pace=100)


async def test_receipt_names_every_message_posted(slack: SlackStandIn) -> None:
    """A send to two targets reports both messages, so both can be threaded into and edited."""
    receipt = await _channel(slack).send(_message())
    first, second = slack.posts
    assert receipt.remote_id == f"C0OPS:{first.ts},C0DEV:{second.ts}"
    assert posted(receipt.remote_id) == [("C0OPS", first.ts), ("C0DEV", second.ts)]


def test_posted_skips_what_is_not_channel_and_ts() -> None:
    """Empty parts, a part without a colon, or without a channel or a ts name no message."""
    assert posted("C1:1.1,,nonsense,:2.2,C3:") == [("C1", "1.1")]


async def test_follow_up_goes_into_every_thread(slack: SlackStandIn) -> None:
    """A resolved alert follows its firing one into each target's thread, not only the first's."""
    channel = _channel(slack)
    first = await channel.send(_message(1))
    assert first.remote_id is not None
    await channel.send(_message(2, labels={THREAD_LABEL: first.remote_id}, acknowledgeable=False))
    threaded = [(p.channel, p.payload["thread_ts"]) for p in slack.posts[2:]]
    assert threaded == [(p.channel, p.ts) for p in slack.posts[:2]]


async def test_follow_up_goes_into_each_of_two_threads_in_one_channel(slack: SlackStandIn) -> None:
    """Two targets naming one channel ("#ops", "C0OPS") post two messages there; a follow-up
    threads under each, not twice under the first."""
    channel = SlackChannel("slack", token=TOKEN, targets=("#ops", "C0OPS"), base_url=slack.base_url, pace=100)
    first = await channel.send(_message(1))
    assert first.remote_id is not None
    await channel.send(_message(2, labels={THREAD_LABEL: first.remote_id}, acknowledgeable=False))
    threaded = [(p.channel, p.payload["thread_ts"]) for p in slack.posts[2:]]
    assert threaded == [(p.channel, p.ts) for p in slack.posts[:2]]


async def test_acknowledged_rewrites_every_message_without_the_button(slack: SlackStandIn) -> None:
    """Each message keeps its content, loses the Acknowledge button and says who acknowledged it."""
    channel = _channel(slack)
    assert isinstance(channel, EditsOnAck)
    message = _message()
    receipt = await channel.send(message)
    assert any(b["type"] == "actions" for b in slack.posts[0].payload["blocks"])
    assert receipt.remote_id is not None
    assert await channel.acknowledged(receipt.remote_id, message, ACK) == 2
    assert [(u.channel, u.ts) for u in slack.updates] == [(p.channel, p.ts) for p in slack.posts]
    for update, post in zip(slack.updates, slack.posts, strict=True):
        blocks = update.payload["blocks"]
        assert blocks[:-1] == [b for b in post.payload["blocks"] if b["type"] != "actions"]
        assert "Acknowledged by alice (slack) at 2024-05-01 12:34 UTC" in blocks[-1]["text"]["text"]
        assert update.payload["text"].startswith("Acknowledged by alice")


async def test_acknowledged_edits_what_it_can_and_names_the_rest(slack: SlackStandIn) -> None:
    """A message Slack no longer has (deleted) is named in the error; the others are still edited."""
    channel = _channel(slack)
    receipt = await channel.send(_message())
    assert receipt.remote_id is not None
    with pytest.raises(ChannelError, match=r"C0GONE:1\.000001.*message_not_found"):
        await channel.acknowledged(f"C0GONE:1.000001,{receipt.remote_id}", _message(), ACK)
    assert len(slack.updates) == 2


async def test_an_incoming_webhook_edits_nothing(slack: SlackStandIn) -> None:
    """Incoming webhooks cannot edit their posts: nothing is called, nothing fails."""
    hook = SlackChannel("hook", webhook_url=slack.webhook_url("XXXX"), pace=100)
    assert await hook.acknowledged("C0OPS:1.000001", _message(), ACK) == 0
    assert slack.updates == []


async def test_an_edit_keeps_the_pace_of_the_channel_it_edits(slack: SlackStandIn) -> None:
    """The edit of a message posted to "#ops" (C0OPS) waits behind that post, on the same pacer."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # the pacer's clock moves only when it sleeps
        slept.append(seconds)

    paced: dict[str, Any] = {"pace": 1, "clock": lambda: sum(slept), "sleep": sleep}
    channel = SlackChannel("slack", token=TOKEN, targets=("#ops",), base_url=slack.base_url, **paced)
    receipt = await channel.send(_message())
    assert receipt.remote_id is not None and not slept
    await channel.acknowledged(receipt.remote_id, _message(), ACK)
    assert slept == [pytest.approx(1.0)]


async def _posted_by_a_channel_that_records_its_waits(
    slack: SlackStandIn,
) -> tuple[SlackChannel, str, list[float]]:
    """A channel whose waits are recorded, not slept (pace 100: its pacer's own stay under 10 ms),
    the remote_id of one message it posted, and the waits."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    channel = SlackChannel(
        "slack", token=TOKEN, targets=("#ops",), base_url=slack.base_url, pace=100, sleep=sleep
    )
    receipt = await channel.send(_message())
    assert receipt.remote_id is not None
    return channel, receipt.remote_id, slept


async def test_an_edit_refused_for_a_rate_limit_is_tried_again_after_retry_after(slack: SlackStandIn) -> None:
    """chat.update is Tier 3: a 429 waits its Retry-After (a 5xx a second) and tries again."""
    channel, remote_id, slept = await _posted_by_a_channel_that_records_its_waits(slack)
    slack.fail_next(Reply(error="ratelimited", status=429, retry_after="3"), Reply(status=503, body="<html>"))
    assert await channel.acknowledged(remote_id, _message(), ACK) == 1
    assert [s for s in slept if s > 0.5] == [3.0, 1.0]
    assert len(slack.updates) == 1


async def test_an_edit_still_refused_after_its_tries_is_named(slack: SlackStandIn) -> None:
    """Three refusals in a row give up on that message and name it; a refusal that cannot pass
    (the message cannot be edited) is not tried again."""
    channel, remote_id, _ = await _posted_by_a_channel_that_records_its_waits(slack)
    slack.fail_next(*[Reply(error="internal_error")] * 3)  # a fourth try would succeed
    with pytest.raises(ChannelError, match="internal_error"):
        await channel.acknowledged(remote_id, _message(), ACK)
    assert (slack.update_requests, slack.updates) == (3, [])
    slack.fail_next(Reply(error="cant_update_message"))  # a second try would succeed
    with pytest.raises(ChannelError, match="cant_update_message"):
        await channel.acknowledged(remote_id, _message(), ACK)
    assert slack.update_requests == 4


async def test_an_edit_told_to_wait_longer_than_it_would_is_given_up(slack: SlackStandIn) -> None:
    """A Retry-After past EDIT_WAIT_MAX_S (30 s) is not waited out: trying sooner draws another 429."""
    channel, remote_id, slept = await _posted_by_a_channel_that_records_its_waits(slack)
    slack.fail_next(Reply(error="ratelimited", status=429, retry_after="120"))
    with pytest.raises(ChannelError, match="429"):
        await channel.acknowledged(remote_id, _message(), ACK)
    assert (slack.update_requests, [s for s in slept if s > 0.5]) == (1, [])
