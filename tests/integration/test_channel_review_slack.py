"""SlackChannel against the Slack stand-in on 127.0.0.1: escaped fallback texts, and threads only
where backchannel itself put them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from channels.base import Acknowledgement
from channels.slack import THREAD_LABEL, SlackChannel
from daemon.core.model import CHANNEL_THREAD_LABELS
from daemon.intake.alertmanager import AlertmanagerPayload, submissions
from daemon.intake.webhook_config import AlertmanagerIntakeConfig
from tests.stand_ins.slack import SlackStandIn, serve
from tests.support import outbound_message

TOKEN = "xoxb-1111-2222-channel-review-token"


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with serve(SlackStandIn(TOKEN)) as stand_in:
        yield stand_in


def _channel(stand_in: SlackStandIn, *targets: str) -> SlackChannel:
    return SlackChannel("slack", token=TOKEN, targets=targets, base_url=stand_in.base_url, pace=100)


async def test_posted_text_fallback_is_escaped(slack: SlackStandIn) -> None:
    """chat.postMessage's text (push notifications) carries no <!channel>, <!here> or <link|label>."""
    body = "<!channel> db down, <https://evil.example/login|re-enter your SSO password> <@U0CEO>"
    await _channel(slack, "#ops").send(outbound_message(1, subject="<!here> Disk full", body=body))
    [post] = slack.posts
    assert "<" not in post.payload["text"]
    assert "&lt;!channel&gt;" in post.payload["text"]


async def test_acknowledged_edit_text_is_escaped(slack: SlackStandIn) -> None:
    """chat.update's text (the note and the message) is escaped too."""
    channel = _channel(slack, "#ops")
    message = outbound_message(1, subject="<!here> Disk full", acknowledgeable=True)
    receipt = await channel.send(message)
    assert receipt.remote_id is not None
    ack = Acknowledgement("<!channel>", "<@U0CEO>", datetime(2024, 5, 1, 12, 34, tzinfo=UTC))
    assert await channel.acknowledged(receipt.remote_id, message, ack) == 1
    [update] = slack.updates
    assert "<" not in update.payload["text"]
    assert "<" not in update.payload["blocks"][-1]["text"]["text"]


async def test_slack_thread_ts_of_an_alert_does_not_redirect_the_post(slack: SlackStandIn) -> None:
    """An Alertmanager alert labelled slack_thread_ts=C0HR:ts still posts to the configured #ops only."""
    alert = {
        "status": "firing",
        "labels": {"alertname": "DiskFull", THREAD_LABEL: "C0HR:1714564800.000100"},
        "startsAt": "2024-05-01T12:00:00Z",
        "fingerprint": "0a1b2c3d",
    }
    document = {"version": "4", "receiver": "backchannel", "status": "firing", "alerts": [alert]}
    document |= {"groupKey": "{}:{}", "groupLabels": {}, "commonLabels": alert["labels"]}
    payload = AlertmanagerPayload.model_validate_json(json.dumps(document))
    for config in (AlertmanagerIntakeConfig(), AlertmanagerIntakeConfig(per="group")):
        [submission] = submissions(payload, config)
        await _channel(slack, "#ops").send(outbound_message(1, labels=dict(submission.labels)))
    assert [(p.channel, p.payload.get("thread_ts")) for p in slack.posts] == [("C0OPS", None)] * 2
    assert THREAD_LABEL in CHANNEL_THREAD_LABELS


async def test_bare_ts_threads_only_the_target_that_posted_it(slack: SlackStandIn) -> None:
    """A bare ts of #ops's message threads the follow-up in #ops; C0DBA gets it at the top level."""
    channel = _channel(slack, "#ops", "C0DBA")
    await channel.send(outbound_message(1))
    ops_ts = slack.posts[0].ts
    await channel.send(outbound_message(2, labels={THREAD_LABEL: ops_ts}))
    assert [(p.channel, p.payload.get("thread_ts")) for p in slack.posts[2:]] == [
        ("C0OPS", ops_ts),
        ("C0DBA", None),
    ]


async def test_bare_ts_of_unknown_origin_threads_no_target(slack: SlackStandIn) -> None:
    """A bare ts this channel did not post, with several targets: every target at the top level."""
    channel = _channel(slack, "#ops", "C0DBA")
    await channel.send(outbound_message(2, labels={THREAD_LABEL: "1714564800.000100"}))
    assert [p.payload.get("thread_ts") for p in slack.posts] == [None, None]
    assert [p.channel for p in slack.posts] == ["C0OPS", "C0DBA"]


async def test_bare_ts_threads_the_only_target(slack: SlackStandIn) -> None:
    """With one target a bare ts can only be that target's: it is threaded there."""
    await _channel(slack, "#ops").send(outbound_message(2, labels={THREAD_LABEL: "1714564800.000100"}))
    assert [(p.channel, p.payload.get("thread_ts")) for p in slack.posts] == [("C0OPS", "1714564800.000100")]


async def test_thread_from_the_store_still_posts_into_each_thread(slack: SlackStandIn) -> None:
    """message.thread (the followed send's remote_id, set by the dispatcher) threads every message."""
    channel = _channel(slack, "#ops", "C0DBA")
    first = await channel.send(outbound_message(1))
    await channel.send(outbound_message(2, thread=first.remote_id))
    threaded = [(p.channel, p.payload.get("thread_ts")) for p in slack.posts[2:]]
    assert threaded == [(p.channel, p.ts) for p in slack.posts[:2]]
