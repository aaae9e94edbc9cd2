"""The shipped FakeChannel: records, scripted outcomes, gate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from channels.base import Channel, ChannelError, OutboundMessage, Receipt
from channels.fake import FakeChannel


def _message(n: int = 1) -> OutboundMessage:
    return OutboundMessage(
        notification_id=f"n-{n}",
        idempotency_key=f"k-{n}",
        severity="critical",
        subject="disk full",
        body="",
        created_at=datetime(2024, 5, 1, tzinfo=UTC),
    )


def test_fake_channel_satisfies_the_channel_protocol() -> None:
    """FakeChannel is a Channel."""
    assert isinstance(FakeChannel("fake"), Channel)


async def test_send_succeeds_and_records_by_default() -> None:
    """With no script every send delivers and is recorded in sent and attempts."""
    channel = FakeChannel("fake")
    receipt = await channel.send(_message())
    assert receipt.channel == "fake"
    assert channel.sent == channel.attempts == [_message()]


async def test_script_answers_sends_in_order() -> None:
    """Scripted outcomes are used one per send, then sends succeed again."""
    boom = ChannelError("down", service_fault=True)
    channel = FakeChannel("fake", script=[boom, None])
    channel.script(Receipt(channel="fake", detail="custom"))
    with pytest.raises(ChannelError) as info:
        await channel.send(_message(1))
    assert info.value is boom
    await channel.send(_message(2))
    assert (await channel.send(_message(3))).detail == "custom"
    await channel.send(_message(4))
    assert [m.notification_id for m in channel.sent] == ["n-2", "n-3", "n-4"]
    assert len(channel.attempts) == 4


async def test_fail_always_raises_until_lifted() -> None:
    """fail_always(error) fails every send until fail_always(None)."""
    channel = FakeChannel("fake")
    channel.fail_always(ChannelError("gone", permanent=True))
    for _ in range(2):
        with pytest.raises(ChannelError):
            await channel.send(_message())
    channel.fail_always(None)
    await channel.send(_message())
    assert len(channel.sent) == 1


async def test_gate_holds_sends_until_set() -> None:
    """A send waits at the gate, counted in in_flight, and completes once it opens."""
    gate = asyncio.Event()
    channel = FakeChannel("fake", gate=gate)
    task = asyncio.create_task(channel.send(_message()))
    async with asyncio.timeout(5):
        while channel.in_flight == 0:
            await asyncio.sleep(0)
    assert channel.sent == []
    gate.set()
    await asyncio.wait_for(task, 5)
    assert channel.in_flight == 0
    assert channel.sent == [_message()]


async def test_send_after_aclose_is_a_bug() -> None:
    """Using a closed channel raises RuntimeError."""
    channel = FakeChannel("fake")
    await channel.aclose()
    assert channel.closed
    with pytest.raises(RuntimeError):
        await channel.send(_message())
