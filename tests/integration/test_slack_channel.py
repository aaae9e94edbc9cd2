"""SlackChannel against the Slack stand-in on 127.0.0.1: rendering, errors, lookups, pacing, secrecy."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator

import pytest

from channels.base import ChannelConfigError, ChannelError, OutboundMessage
from channels.pacing import Pacer
from channels.slack import SECTION_MAX, TEXT_MAX, THREAD_LABEL, SlackChannel
from tests.stand_ins.slack import Reply, SlackStandIn, serve
from tests.support import outbound_message

TOKEN = "xoxb-1111-2222-behaviour-test-token"


def _message(n: int = 1, **overrides: object) -> OutboundMessage:
    fields: dict[str, object] = {"body": "db-1 at 99% & climbing <fast>", "source": "alertmanager"}
    return outbound_message(n, **(fields | overrides))


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with serve(SlackStandIn(TOKEN)) as stand_in:
        yield stand_in


def _channel(stand_in: SlackStandIn, *targets: str, token: str = TOKEN, pace: float = 100) -> SlackChannel:
    return SlackChannel("slack", token=token, targets=targets, base_url=stand_in.base_url, pace=pace)


async def _send_error(channel: SlackChannel, message: OutboundMessage) -> ChannelError:
    with pytest.raises(ChannelError) as caught:
        await channel.send(message)
    return caught.value


async def test_post_carries_blocks_metadata_and_remote_id(slack: SlackStandIn) -> None:
    """A post has a severity header, escaped body, the id in context, metadata, and channel:ts back."""
    receipt = await _channel(slack, "#ops").send(_message())
    [post] = slack.posts
    header, section, context = post.payload["blocks"]
    assert "CRITICAL: Disk full #1" in header["text"]["text"]
    assert section["text"]["text"] == "db-1 at 99% &amp; climbing &lt;fast&gt;"
    assert "`ntf_001`" in context["elements"][0]["text"]
    assert post.payload["metadata"]["event_type"] == "backchannel_notification"
    assert post.payload["metadata"]["event_payload"]["idempotency_key"] == "ntf_001"
    assert receipt.remote_id == f"C0OPS:{post.ts}"


async def test_long_body_is_truncated_to_slack_limits(slack: SlackStandIn) -> None:
    """A 20,000-character body fits the section (3000) and text (4000) limits, ending in an ellipsis."""
    await _channel(slack, "#ops").send(_message(body="a&b " * 5000, subject="s" * 400))
    [post] = slack.posts
    header, section, _ = post.payload["blocks"]
    assert len(header["text"]["text"]) <= 150
    assert len(section["text"]["text"]) <= SECTION_MAX
    assert section["text"]["text"].endswith("\u2026")
    assert "&amp\u2026" not in section["text"]["text"]
    assert len(post.payload["text"]) <= TEXT_MAX


@pytest.mark.parametrize(
    ("code", "permanent"),
    [
        ("channel_not_found", True),
        ("not_in_channel", True),
        ("invalid_auth", True),
        ("account_inactive", True),
        ("is_archived", True),
        ("msg_too_long", True),
        ("no_text", True),
        ("token_revoked", True),
        ("missing_scope", True),
        ("invalid_blocks", True),
        ("ratelimited", False),
        ("internal_error", False),
        ("fatal_error", False),
        ("service_unavailable", False),
        ("request_timeout", False),
    ],
)
async def test_ok_false_error_maps_to_documented_outcome(
    slack: SlackStandIn, code: str, permanent: bool
) -> None:
    """Each documented chat.postMessage error ends permanent (fail over) or transient (retry later)."""
    slack.fail_next(Reply(error=code))
    error = await _send_error(_channel(slack, "#ops"), _message())
    assert error.permanent is permanent
    assert code in str(error)


async def test_http_429_honours_retry_after(slack: SlackStandIn) -> None:
    """HTTP 429 is transient with retry_after_s taken from Retry-After."""
    slack.fail_next(Reply(error="ratelimited", status=429, retry_after="7"))
    error = await _send_error(_channel(slack, "#ops"), _message())
    assert (error.permanent, error.retry_after_s) == (False, 7.0)


async def test_http_5xx_with_html_body_is_transient(slack: SlackStandIn) -> None:
    """An HTTP 503 with a non-JSON body is a transient service fault."""
    slack.fail_next(Reply(status=503, body="<html>upstream down</html>"))
    error = await _send_error(_channel(slack, "#ops"), _message())
    assert (error.permanent, error.service_fault) == (False, True)


async def test_unreachable_slack_is_transient(caplog: pytest.LogCaptureFixture) -> None:
    """A refused connection is a transient service fault, and no error in the log: the dispatcher
    logs the retry. The SDK's own 'Failed to send a request to Slack API server' line was an ERROR,
    so every transient failure showed in ``journalctl -p err``."""
    caplog.set_level(logging.DEBUG)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = SlackChannel("slack", token=TOKEN, targets=("#ops",), base_url=f"http://127.0.0.1:{port}/api/")
    error = await _send_error(channel, _message())
    assert (error.permanent, error.service_fault) == (False, True)
    sdk = [r for r in caplog.records if r.name.startswith("channels.slack.sdk")]
    assert any("Failed to send a request" in r.getMessage() for r in sdk)
    assert all(r.levelno <= logging.INFO for r in sdk), [(r.levelname, r.getMessage()) for r in sdk]


async def test_email_target_is_looked_up_once(slack: SlackStandIn) -> None:
    """Two sends to an email target make one users.lookupByEmail and DM the user."""
    slack.users["alice@example.com"] = "U0ALICE"
    channel = _channel(slack, "alice@example.com")
    await channel.send(_message(1))
    await channel.send(_message(2))
    assert slack.lookups == ["alice@example.com"]
    assert [post.channel for post in slack.posts] == ["D0ALICE", "D0ALICE"]


async def test_unknown_email_is_permanent(slack: SlackStandIn) -> None:
    """An email with no Slack user (users_not_found) is a permanent failure."""
    error = await _send_error(_channel(slack, "nobody@example.com"), _message())
    assert error.permanent and "users_not_found" in str(error)


async def test_message_recipients_get_dms_when_enabled(slack: SlackStandIn) -> None:
    """With dm_recipients, each recipient (email or user id) gets a DM beside the targets."""
    slack.users["bob@example.com"] = "U0BOB"
    channel = SlackChannel(
        "slack", token=TOKEN, targets=("#ops",), dm_recipients=True, base_url=slack.base_url, pace=100
    )
    await channel.send(_message(recipients=("bob@example.com", "U0CAROL")))
    assert [post.channel for post in slack.posts] == ["C0OPS", "D0BOB", "D0CAROL"]


async def test_thread_label_posts_follow_up_into_thread(slack: SlackStandIn) -> None:
    """A slack_thread_ts label of channel:ts (an earlier remote_id) posts into that thread."""
    channel = _channel(slack, "#ops")
    first = await channel.send(_message(1))
    assert first.remote_id is not None
    await channel.send(_message(2, labels={THREAD_LABEL: first.remote_id}))
    follow_up = slack.posts[1]
    assert (follow_up.channel, follow_up.payload["thread_ts"]) == ("C0OPS", slack.posts[0].ts)


async def test_retry_after_partial_failure_skips_delivered_target(slack: SlackStandIn) -> None:
    """A transient failure on one target retries only that target, not the one already posted."""
    slack.channels["#dev"] = "C0DEV"
    slack.fail_next(Reply(error="internal_error"), channel="C0DEV")
    channel = _channel(slack, "#ops", "#dev")
    error = await _send_error(channel, _message())
    assert not error.permanent
    assert error.remote_id == f"C0OPS:{slack.posts[0].ts}"  # what it did post, kept for edits
    receipt = await channel.send(_message())
    assert [post.channel for post in slack.posts] == ["C0OPS", "C0DEV"]
    assert receipt.remote_id == ",".join(f"{p.channel}:{p.ts}" for p in slack.posts)


async def test_permanent_failure_of_one_target_still_delivers(slack: SlackStandIn) -> None:
    """When one target is gone for good and another got the post, the send counts as delivered."""
    receipt = await _channel(slack, "#ops", "#gone").send(_message())
    assert "channel_not_found" in receipt.detail
    assert [post.channel for post in slack.posts] == ["C0OPS"]


@pytest.mark.slow
async def test_burst_of_fifty_is_paced_without_429_and_in_order() -> None:
    """50 messages to one channel at pace 10/s against a 10/s limit draw no 429 and arrive in order."""
    async with serve(SlackStandIn(TOKEN, rate_per_s=10)) as slack:
        channel = _channel(slack, "#ops", pace=10)
        receipts = await asyncio.wait_for(
            asyncio.gather(*(channel.send(_message(n)) for n in range(50))), timeout=60
        )
    assert len(receipts) == 50
    assert slack.rate_limited == 0
    assert [post.payload["metadata"]["event_payload"]["notification_id"] for post in slack.posts] == [
        f"ntf_{n:03d}" for n in range(50)
    ]


async def test_unpaced_burst_draws_429_from_stand_in() -> None:
    """Without pacing the same stand-in answers 429 with Retry-After, so the burst test means something."""
    async with serve(SlackStandIn(TOKEN, rate_per_s=10)) as slack:
        channel = _channel(slack, "#ops", pace=10_000)
        results = await asyncio.gather(
            *(channel.send(_message(n)) for n in range(20)), return_exceptions=True
        )
    limited = [r for r in results if isinstance(r, ChannelError)]
    assert slack.rate_limited > 0 and limited
    assert all(not e.permanent and e.retry_after_s == 1.0 for e in limited)


async def test_token_never_logged_or_raised(slack: SlackStandIn, caplog: pytest.LogCaptureFixture) -> None:
    """A failing send leaves the bot token out of DEBUG logs and the exception text."""
    caplog.set_level(logging.DEBUG)
    secret = "xoxb-9999-8888-leak-canary"
    error = await _send_error(_channel(slack, "#ops", token=secret), _message())
    assert "invalid_auth" in str(error)
    assert any(r.name.startswith("channels.slack.sdk") for r in caplog.records)
    assert secret not in caplog.text
    assert secret not in str(error) and secret not in repr(error.__cause__)


async def test_webhook_secret_never_logged_or_raised(
    slack: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing webhook send leaves the secret webhook URL out of DEBUG logs and the exception text."""
    caplog.set_level(logging.DEBUG)
    url = slack.webhook_url("s3cr3tWebhookPath")
    slack.fail_next(Reply(status=404, body="channel_not_found"))
    error = await _send_error(SlackChannel("hook", webhook_url=url), _message())
    assert error.permanent
    assert any(r.name.startswith("channels.slack.sdk") for r in caplog.records)
    assert "s3cr3tWebhookPath" not in caplog.text and "s3cr3tWebhookPath" not in str(error)


async def test_webhook_mode_posts_blocks(slack: SlackStandIn) -> None:
    """Incoming-webhook mode POSTs the same text and blocks to the webhook URL."""
    receipt = await SlackChannel("hook", webhook_url=slack.webhook_url("abc")).send(_message())
    [payload] = slack.webhook_posts
    assert payload["blocks"][0]["type"] == "header" and "Disk full" in payload["text"]
    assert receipt.channel == "hook"


@pytest.mark.parametrize(
    ("reply", "permanent", "retry_after_s"),
    [
        (Reply(status=400, body="invalid_payload"), True, None),
        (Reply(status=403, body="action_prohibited"), True, None),
        (Reply(status=404, body="channel_not_found"), True, None),
        (Reply(status=410, body="channel_is_archived"), True, None),
        (Reply(status=500, body="rollup_error"), False, None),
        (Reply(status=429, body="rate_limited", retry_after="3"), False, 3.0),
    ],
)
async def test_webhook_error_maps_to_documented_outcome(
    slack: SlackStandIn, reply: Reply, permanent: bool, retry_after_s: float | None
) -> None:
    """Each documented incoming-webhook error ends permanent or transient, honouring Retry-After."""
    slack.fail_next(reply)
    error = await _send_error(SlackChannel("hook", webhook_url=slack.webhook_url("abc")), _message())
    assert (error.permanent, error.retry_after_s) == (permanent, retry_after_s)


def test_token_and_webhook_together_is_config_error() -> None:
    """A channel is either bot-token or incoming-webhook, never both."""
    with pytest.raises(ChannelConfigError):
        SlackChannel("slack", token=TOKEN, webhook_url="https://hooks.slack.com/services/T/B/X")


async def test_pacer_spaces_acquires_and_keeps_order() -> None:
    """Acquires on one key are released rate-apart, FIFO; another key is not held up."""
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds
        await asyncio.sleep(0)

    pacer = Pacer(2.0, monotonic=lambda: clock[0], sleep=sleep)
    released: list[tuple[str, float]] = []

    async def take(key: str) -> None:
        await pacer.acquire(key)
        released.append((key, clock[0]))

    await asyncio.gather(take("a"), take("a"), take("a"))
    await take("b")
    assert released == [("a", 0.0), ("a", 0.5), ("a", 1.0), ("b", 1.0)]


async def test_pacer_cost_above_burst_overdraws_instead_of_blocking() -> None:
    """A cost larger than the burst goes at once from a full bucket and delays the next caller."""
    start = time.monotonic()
    clock = [start]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    pacer = Pacer(1.0, monotonic=lambda: clock[0], sleep=sleep)
    await pacer.acquire("sender", cost=3)
    assert clock[0] == start
    await pacer.acquire("sender")
    assert clock[0] - start == pytest.approx(3.0)
