"""Acknowledging an escalation through the whole daemon: its Slack button and its SMS reply.

The daemon runs in-process with its real composition root (config → store → channels → API), the
Slack and Twilio stand-ins on loopback. The later step of each escalation is minutes away, so a
stopped escalation shows as that step's delivery superseded, not as the absence of a send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from channels import slack_interactions as slack
from daemon.ack_updates import shown_as
from daemon.api.ack import inbound_url
from tests.acceptance.harness import free_port
from tests.stand_ins import slack as slack_stand_in
from tests.stand_ins import twilio as twilio_stand_in
from tests.stand_ins.slack import Reply, SlackStandIn
from tests.stand_ins.twilio import TwilioStandIn
from tests.support import config_template, daemon_api, until

TOKEN = "ack-daemon-test-api-token-42"
SLACK_TOKEN = "xoxb-ack-daemon-slack-token-0123456789"
SIGNING_SECRET = "ack-daemon-slack-signing-secret-01"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-ack-daemon-auth-token-987"
CALLBACK = "https://backchannel.test.example/v1/callbacks/twilio"
ENV = {"TOKEN": TOKEN, "SLACK_TOKEN": SLACK_TOKEN, "SIGNING": SIGNING_SECRET, "TWILIO_TOKEN": TWILIO_TOKEN}
CONFIG = config_template("""\
  slack:
    {{type: slack, token: "${{SLACK_TOKEN}}", targets: {slack_targets}, api_url: "{slack_url}/api/",
     signing_secret: "${{SIGNING}}", pace: 50}}
  sms:
    {{type: sms, account_sid: {sid}, auth_token: "${{TWILIO_TOKEN}}", from_number: "+14155550100",
     recipients: ["+14155552671"], api_url: "{twilio_url}", status_callback: "{callback}", pace: 50}}
routes:
  - name: slack-first
    match: {{labels: {{first: slack}}}}
    healthy: [email]
    outage: {{escalate: [{{after: 0s, notify: [slack]}}, {{after: 10m, notify: [sms]}}]}}
  - name: sms-first
    match: {{}}
    healthy: [email]
    outage: {{escalate: [{{after: 0s, notify: [sms]}}, {{after: 10m, notify: [slack]}}]}}
""")


@contextlib.asynccontextmanager
async def _daemon(
    tmp_path: Path, slack_targets: str = '["#ops"]', config: str | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, SlackStandIn, TwilioStandIn]]:
    """The daemon on ``config`` (CONFIG by default) in outage, with its Slack and Twilio stand-ins."""
    slack_api, twilio_api = SlackStandIn(SLACK_TOKEN), TwilioStandIn(TWILIO_SID, TWILIO_TOKEN)
    slack_api.channels["#dev"] = "C0DEV"
    async with slack_stand_in.serve(slack_api), twilio_stand_in.serve(twilio_api):
        text = (CONFIG if config is None else config).format(
            slack_targets=slack_targets,
            store=tmp_path / "outbox.db",
            api_port=free_port(),
            smtp_port=9,  # discard: these escalations never mail
            slack_url=f"http://127.0.0.1:{slack_api.port}",
            sid=TWILIO_SID,
            twilio_url=twilio_api.base_url,
            callback=CALLBACK,
        )
        async with daemon_api(text, TOKEN, ENV) as (_, api):
            override = await api.post("/v1/provider/override", json={"state": "outage", "reason": "t"})
            assert override.status_code == 200, override.text
            yield api, slack_api, twilio_api


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, SlackStandIn, TwilioStandIn]]:
    async with _daemon(tmp_path) as running:
        yield running


async def _page(api: httpx.AsyncClient, **labels: str) -> str:
    answer = await api.post(
        "/v1/notifications", json={"severity": "critical", "subject": "db down", "labels": labels}
    )
    assert answer.status_code == 202, answer.text
    nid: str = answer.json()["id"]
    return nid


async def _view(api: httpx.AsyncClient, nid: str) -> dict[str, Any]:
    view: dict[str, Any] = (await api.get(f"/v1/notifications/{nid}")).json()
    return view


async def _stopped(api: httpx.AsyncClient, nid: str, later: str) -> dict[str, Any] | None:
    """The notification's view once its later step is superseded, else None."""
    view = await _view(api, nid)
    states = {d["channel"]: d["state"] for d in view["deliveries"]}
    return view if states.get(later) == "superseded" else None


async def test_the_slack_button_of_a_running_daemon_stops_the_escalation(
    world: tuple[httpx.AsyncClient, SlackStandIn, TwilioStandIn],
) -> None:
    """The first step's Slack message carries the button; a signed click acknowledges and stops step two."""
    api, slack_api, _ = world
    nid = await _page(api, first="slack")

    async def posted() -> list[dict[str, Any]]:
        return [p.payload for p in slack_api.posts]

    (payload,) = await until(posted)
    (button,) = [e for b in payload["blocks"] if b["type"] == "actions" for e in b["elements"]]
    click = {"type": "block_actions", "user": {"id": "U0ALICE", "username": "alice"}, "actions": [button]}
    body = urlencode({"payload": json.dumps(click)}).encode()
    stamp = str(int(time.time()))
    headers = {
        slack.TIMESTAMP_HEADER: stamp,
        slack.SIGNATURE_HEADER: slack.signature(SIGNING_SECRET, stamp, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    forged = dict(headers, **{slack.SIGNATURE_HEADER: slack.signature("not-the-secret", stamp, body)})
    assert (await api.post("/v1/callbacks/slack", content=body, headers=forged)).status_code == 401
    assert (await api.post("/v1/callbacks/slack", content=body, headers=headers)).status_code == 200
    view = await until(lambda: _stopped(api, nid, "sms"))
    assert any(a["outcome"] == "acknowledged" and "alice" in (a["detail"] or "") for a in view["attempts"])
    (edit,) = await until(lambda: slack_api.updates)
    _assert_shows_acknowledged(edit.payload, "alice (slack)")
    assert (edit.channel, edit.ts) == (slack_api.posts[0].channel, slack_api.posts[0].ts)


async def test_an_acknowledgement_by_the_api_shows_on_the_slack_message(
    world: tuple[httpx.AsyncClient, SlackStandIn, TwilioStandIn],
) -> None:
    """However it is acknowledged, the Slack message that asked loses its button and says by whom."""
    api, slack_api, _ = world
    nid = await _page(api, first="slack")
    (post,) = await until(lambda: slack_api.posts)
    answer = await api.post(f"/v1/notifications/{nid}/ack", json={"by": "bob <on call>"})
    assert answer.status_code == 200, answer.text
    (edit,) = await until(lambda: slack_api.updates)
    assert (edit.channel, edit.ts) == (post.channel, post.ts)
    _assert_shows_acknowledged(edit.payload, "bob &lt;on call&gt; (api)")
    assert edit.payload["blocks"][0] == post.payload["blocks"][0]  # the same header


async def test_an_acknowledgement_during_the_slack_send_edits_the_message_once_posted(
    world: tuple[httpx.AsyncClient, SlackStandIn, TwilioStandIn],
) -> None:
    """Acknowledged while its Slack message is being posted: the edit waits for the outcome."""
    api, slack_api, _ = world
    slack_api.gate = asyncio.Event()
    nid = await _page(api, first="slack")
    await until(lambda: slack_api.holding == 1)
    answer = await api.post(f"/v1/notifications/{nid}/ack", json={"by": "carol"})
    assert answer.status_code == 200, answer.text
    slack_api.gate.set()
    (edit,) = await until(lambda: slack_api.updates)
    (post,) = slack_api.posts
    assert (edit.channel, edit.ts) == (post.channel, post.ts)
    _assert_shows_acknowledged(edit.payload, "carol (api)")


async def test_a_slack_edit_that_fails_is_logged_and_the_acknowledgement_stands(
    world: tuple[httpx.AsyncClient, SlackStandIn, TwilioStandIn], caplog: pytest.LogCaptureFixture
) -> None:
    """Slack refusing the edit costs nothing but a warning: the escalation is stopped all the same."""
    api, slack_api, _ = world
    nid = await _page(api, first="slack")
    await until(lambda: slack_api.posts)
    slack_api.fail_next(Reply(error="cant_update_message"))  # permanent: not tried again
    with caplog.at_level(logging.WARNING, logger="daemon.ack_updates"):
        answer = await api.post(f"/v1/notifications/{nid}/ack", json={"by": "bob"})
        assert answer.status_code == 200, answer.text
        await until(lambda: [r for r in caplog.records if getattr(r, "event", "") == "ack.update_failed"])
    assert slack_api.updates == []
    await until(lambda: _stopped(api, nid, "sms"))


async def test_a_message_posted_by_a_send_that_failed_on_another_target_is_edited(tmp_path: Path) -> None:
    """Posted to #ops, refused by #dev for a while (to be retried): acknowledged from the #ops
    message, that message still loses its button; the retry is superseded, #dev never posted."""
    async with _daemon(tmp_path, slack_targets='["#ops", "#dev"]') as (api, slack_api, _):
        slack_api.fail_next(Reply(error="ratelimited", status=429, retry_after="600"), channel="C0DEV")
        nid = await _page(api, first="slack")

        async def retrying() -> dict[str, Any] | None:
            view = await _view(api, nid)
            return view if any(a["outcome"] == "retry" for a in view["attempts"]) else None

        await until(retrying)
        (post,) = slack_api.posts
        answer = await api.post(f"/v1/notifications/{nid}/ack", json={"by": "dave"})
        assert answer.status_code == 200, answer.text
        (edit,) = await until(lambda: slack_api.updates)
        assert (edit.channel, edit.ts) == (post.channel, post.ts) == ("C0OPS", post.ts)
        _assert_shows_acknowledged(edit.payload, "dave (api)")
        view = await until(lambda: _stopped(api, nid, "sms"))
        assert {d["channel"]: d["state"] for d in view["deliveries"]}["slack"] == "superseded"
        assert [p.channel for p in slack_api.posts] == ["C0OPS"]


def test_an_sms_acknowledgement_shows_the_number_by_its_last_digits() -> None:
    """A shared channel sees the last four digits of an SMS acknowledger's number, a name whole."""
    assert shown_as("+14155552671", "sms") == "…2671"
    assert shown_as("alice", "slack") == "alice"


def _assert_shows_acknowledged(payload: dict[str, Any], who: str) -> None:
    blocks = payload["blocks"]
    assert not [b for b in blocks if b["type"] == "actions"], "the Acknowledge button is still there"
    assert f"Acknowledged by {who}" in blocks[-1]["text"]["text"]
    assert payload["text"].startswith("Acknowledged by ")


async def test_an_sms_reply_to_a_running_daemon_stops_the_escalation(
    world: tuple[httpx.AsyncClient, SlackStandIn, TwilioStandIn],
) -> None:
    """The SMS asks for "ACK <code>"; that reply through the signed inbound webhook stops step two."""
    api, _, twilio_api = world
    nid = await _page(api)

    async def texted() -> list[str]:
        return [s.body for s in twilio_api.sent]

    (text,) = await until(texted)
    code = text.rsplit("Reply ACK ", 1)[1]
    form = {
        "MessageSid": "SM" + "1" * 32,
        "From": "+14155552671",
        "To": "+14155550100",
        "Body": f"ack {code}",
    }
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(inbound_url(CALLBACK), form)
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    answer = await api.post("/v1/callbacks/twilio/inbound", content=urlencode(form), headers=headers)
    assert answer.status_code == 200 and "cknowledged" in answer.text, answer.text
    view = await until(lambda: _stopped(api, nid, "slack"))
    assert any(a["outcome"] == "acknowledged" for a in view["attempts"])


#: two SMS channels of one Twilio account (one token, one callback URL) and Slack
ONE_ACCOUNT = """\
  slack:
    {{type: slack, token: "${{SLACK_TOKEN}}", targets: ["#ops"], api_url: "{slack_url}/api/",
     signing_secret: "${{SIGNING}}", pace: 50}}
  sms-oncall:
    {{type: sms, account_sid: {sid}, auth_token: "${{TWILIO_TOKEN}}", from_number: "+14155550100",
     recipients: ["+14155552671"], api_url: "{twilio_url}", status_callback: "{callback}", pace: 50}}
  sms-secondary:
    {{type: sms, account_sid: {sid}, auth_token: "${{TWILIO_TOKEN}}", from_number: "+14155550100",
     recipients: ["+14155552672"], api_url: "{twilio_url}", status_callback: "{callback}", pace: 50}}
"""


def _paging(second: str) -> str:
    """ONE_ACCOUNT's channels and one route paging sms-secondary at once, then ``second`` at 10 m."""
    steps = f"[{{{{after: 0s, notify: [sms-secondary]}}}}, {{{{after: 10m, notify: [{second}]}}}}]"
    return config_template(
        ONE_ACCOUNT + f"routes:\n  - name: page\n    match: {{{{}}}}\n    healthy: [email]\n"
        f"    outage: {{{{escalate: {steps}}}}}\n"
    )


SHARED_ACCOUNT = _paging("slack")


async def test_an_undelivered_sms_of_a_second_channel_on_one_twilio_account_hurries_the_next_step(
    tmp_path: Path,
) -> None:
    """Two SMS channels of one Twilio account share its token and callback URL: Twilio's report
    that the second one's text was undelivered is recorded on it and brings the next step forward."""
    async with _daemon(tmp_path, config=SHARED_ACCOUNT) as (api, slack_api, twilio_api):
        nid = await _page(api)
        (sent,) = await until(lambda: twilio_api.sent)
        form = {"MessageSid": sent.sid, "MessageStatus": "undelivered", "ErrorCode": "30003"}
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(CALLBACK, form)
        headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
        answer = await api.post("/v1/callbacks/twilio", content=urlencode(form), headers=headers)
        assert answer.status_code == 200 and answer.json() == {"recorded": True}, answer.text
        await until(lambda: slack_api.posts)
        view = await _view(api, nid)
        assert {d["channel"]: d["state"] for d in view["deliveries"]}["sms-secondary"] == "failed"


FAN_OUT = _paging("slack, sms-oncall")


async def test_an_undelivered_sms_beside_a_delivered_slack_post_does_not_reopen_the_escalation(
    tmp_path: Path,
) -> None:
    """A text Twilio reports undelivered, of a step whose Slack post went out, leaves the
    notification delivered: the provider's recovery does not re-plan it to email."""
    async with _daemon(tmp_path, config=FAN_OUT) as (api, slack_api, twilio_api):
        nid = await _page(api)
        (first,) = await until(lambda: twilio_api.sent)
        await _undelivered(api, first.sid)  # brings the last step, Slack and a text, forward
        await until(lambda: slack_api.posts and len(twilio_api.sent) == 2)
        await until(lambda: _status(api, nid, "delivered"))
        await _undelivered(api, twilio_api.sent[1].sid)
        assert (await _view(api, nid))["status"] == "delivered"
        healthy = await api.post("/v1/provider/override", json={"state": "healthy", "reason": "t"})
        assert healthy.status_code == 200, healthy.text
        assert (await api.post(f"/v1/notifications/{nid}/cancel")).status_code == 409
        assert "email" not in {d["channel"] for d in (await _view(api, nid))["deliveries"]}


async def _undelivered(api: httpx.AsyncClient, sid: str) -> None:
    """Twilio's signed status callback: the text ``sid`` was undelivered."""
    form = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(CALLBACK, form)
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    answer = await api.post("/v1/callbacks/twilio", content=urlencode(form), headers=headers)
    assert answer.status_code == 200 and answer.json() == {"recorded": True}, answer.text


async def _status(api: httpx.AsyncClient, nid: str, status: str) -> dict[str, Any] | None:
    """The notification's view once its status is ``status``, else None."""
    view = await _view(api, nid)
    return view if view["status"] == status else None
