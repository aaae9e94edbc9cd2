"""Escalation policies and acknowledgement: configuration, the pure core, and the vendor edges
(the Slack button and its request signature, the SMS reply), without sockets."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from channels import slack_interactions as slack
from channels.base import OutboundMessage
from channels.gsm import segment_count
from channels.slack import render
from channels.sms import render_text
from channels.twilio_callbacks import ack_code_in, twiml_reply
from daemon.api.ack import inbound_url
from daemon.config import parse_config
from daemon.core.model import (
    ACK_CODE_ALPHABET,
    Escalation,
    EscalationStep,
    Notification,
    Severity,
    normalise_ack_code,
)
from daemon.core.routing import plan_for
from daemon.store.codec import random_ack_code
from tests.unit.test_config import ENV, base, problems_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LADDER = [
    {"after": "0s", "notify": ["email"]},
    {"after": "5m", "notify": ["incident"]},
]


def with_outage(outage: Any, **extra: Any) -> dict[str, Any]:
    data = base()
    data["routes"][0]["outage"] = outage
    data["routes"][0].update(extra)
    return data


def policy(data: dict[str, Any]) -> Any:
    import yaml

    return parse_config(yaml.safe_dump(data), env=ENV).policy()


def test_escalate_form_builds_an_escalation() -> None:
    """``outage: {escalate: [...]}`` becomes steps with their delays and channels."""
    route = policy(with_outage({"escalate": LADDER}))[0]
    assert route.outage == Escalation(
        (EscalationStep(timedelta(0), ("email",)), EscalationStep(timedelta(minutes=5), ("incident",)))
    )
    assert route.healthy == ("email",)


def test_plain_list_stays_a_failover_order() -> None:
    """The list form is unchanged: channels tried in order."""
    assert policy(base())[0].outage == ("incident", "email")


def test_escalation_after_must_increase() -> None:
    """A step no later than the one before is refused, naming the route's line and path."""
    ladder = [{"after": "5m", "notify": ["email"]}, {"after": "5m", "notify": ["incident"]}]
    (problem,) = problems_of(with_outage({"escalate": ladder}))
    assert problem.path == "routes[0].outage.escalate"
    assert "later than the one before (5m, 5m)" in problem.message
    assert problem.line is not None


def test_escalation_names_unknown_channels_with_their_path() -> None:
    """An unknown channel in a step is reported at routes[0].outage.escalate[1].notify[0]."""
    ladder = [{"after": "0s", "notify": ["email"]}, {"after": "5m", "notify": ["pager"]}]
    (problem,) = problems_of(with_outage({"escalate": ladder}))
    assert problem.path == "routes[0].outage.escalate[1].notify[0]"
    assert "unknown channel 'pager'" in problem.message


def test_escalation_uses_each_channel_once() -> None:
    """A channel in two steps would be dropped as a repeat by its idempotency key: refused."""
    ladder = [{"after": "0s", "notify": ["email"]}, {"after": "5m", "notify": ["email"]}]
    (problem,) = problems_of(with_outage({"escalate": ladder}))
    assert "appears once per escalation (email)" in problem.message


def test_negative_delay_is_refused() -> None:
    """``after`` cannot be before acceptance."""
    problems = problems_of(with_outage({"escalate": [{"after": "-5m", "notify": ["email"]}]}))
    assert problems[0].path == "routes[0].outage.escalate[0].after"


def test_catch_up_defaults_true_and_is_inherited() -> None:
    """``catch_up`` is carried to the core route; children inherit their parent's."""
    data = with_outage(["incident"], catch_up=False, routes=[{"match": {"severity": ["critical"]}}])
    route = policy(data)[0]
    assert route.catch_up is False
    assert route.routes[0].catch_up is False
    assert policy(base())[0].catch_up is True


def test_plan_for_gives_the_escalation() -> None:
    """Routing hands the store an escalating plan whose channels list every step's."""
    routes = policy(with_outage({"escalate": LADDER}))
    note = Notification("n1", "k1", T0, Severity.CRITICAL, "down")
    plan = plan_for(note, "outage", routes)
    assert plan.escalation is not None
    assert plan.channels == ("email", "incident")
    assert plan.escalation.schedule(T0) == [(0, "email", T0), (1, "incident", T0 + timedelta(minutes=5))]


@pytest.mark.parametrize("label", ["resolves", "group_acknowledged"])
def test_a_resolution_or_a_group_someone_took_on_is_told_once(label: str) -> None:
    """Either label makes the escalation a failover list, in every plan routing makes (the store's
    at accept, the rerouter's when the mode changes), so it never pages on a timer."""
    routes = policy(with_outage({"escalate": LADDER}))
    note = Notification("n1", "k1", T0, Severity.CRITICAL, "down", labels={label: "x"})
    plan = plan_for(note, "outage", routes)
    assert (plan.escalation, plan.steps) == (None, ("email", "incident"))


def test_core_escalation_refuses_unordered_steps() -> None:
    """The core checks its own invariant, whoever builds the escalation."""
    with pytest.raises(ValueError, match="increasing"):
        Escalation((EscalationStep(timedelta(minutes=5), ("a",)), EscalationStep(timedelta(0), ("b",))))


def test_ack_code_is_typed_forgivingly() -> None:
    """Lower case, O for 0 and I/L for 1 read as the stored code."""
    assert normalise_ack_code(" v8ix8z ") == "V81X8Z"
    assert normalise_ack_code("0o0000") == "000000"
    assert normalise_ack_code("l1i1") == "1111"


def test_ack_codes_are_drawn_from_the_unambiguous_alphabet() -> None:
    """Six characters with no I, L, O or U; a typed code normalises to itself; draws differ."""
    assert len(ACK_CODE_ALPHABET) == 32 and not set("ILOU") & set(ACK_CODE_ALPHABET)
    codes = {random_ack_code() for _ in range(200)}
    assert all(len(c) == 6 and set(c) <= set(ACK_CODE_ALPHABET) for c in codes)
    assert all(normalise_ack_code(c.lower()) == c for c in codes)
    assert len(codes) > 190


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("ACK V81X8Z", "V81X8Z"),
        ("ack v81x8z", "v81x8z"),
        ("Ack: V81X8Z!", "V81X8Z"),
        ("ok", None),
        ("ACK", None),
    ],
)
def test_sms_reply_yields_its_code(text: str, code: str | None) -> None:
    """Only a reply of the form ACK <code> carries a code."""
    assert ack_code_in(text) == code


def test_twiml_reply_escapes_text() -> None:
    """The answer is a TwiML Message with XML special characters escaped."""
    assert twiml_reply("a < b").endswith("<Response><Message>a &lt; b</Message></Response>")


def test_inbound_url_is_the_status_callback_plus_inbound() -> None:
    """Twilio signs the messaging webhook URL configured for the number."""
    assert inbound_url("https://bc.example.com/v1/callbacks/twilio") == (
        "https://bc.example.com/v1/callbacks/twilio/inbound"
    )


def _message(acknowledgeable: bool) -> OutboundMessage:
    return OutboundMessage("n1", "n1", "critical", "down", "", T0, acknowledgeable=acknowledgeable)


def test_slack_message_has_an_acknowledge_button_only_when_acknowledgeable() -> None:
    """The button's value is the notification id; a plain message has no actions block."""
    _, blocks = render(_message(True))
    (actions,) = [b for b in blocks if b["type"] == "actions"]
    assert actions["elements"][0]["action_id"] == slack.ACK_ACTION
    assert actions["elements"][0]["value"] == "n1"
    assert all(b["type"] != "actions" for b in render(_message(False))[1])


def test_sms_text_asks_for_the_ack_reply_within_its_budget() -> None:
    """While acknowledgeable, the SMS ends in the id and "Reply ACK <code>", however long the body."""
    long = replace(_message(True), body="x " * 400, ack_code="K7Q2ZD")
    text = render_text(long, 1)
    assert text.endswith(" [n1] Reply ACK K7Q2ZD") and segment_count(text) == 1
    assert "Reply ACK" not in render_text(replace(long, acknowledgeable=False), 1)


def _click(value: str = "n1") -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": "U1"},
        "actions": [{"action_id": slack.ACK_ACTION, "value": value}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_slack_signature_verifies_with_any_configured_secret() -> None:
    """v0 HMAC-SHA256 over v0:timestamp:body with one of the signing secrets passes."""
    body, now = _click(), 1_700_000_000.0
    presented = slack.signature("s2", "1700000000", body)
    slack.verify(["s1", "s2"], "1700000000", body, presented, now)
    assert slack.parse_ack(body) == slack.AckClick("n1", "U1")


@pytest.mark.parametrize(
    ("secret", "timestamp", "now"),
    [("other", "1700000000", 1_700_000_000.0), ("s1", "1700000000", 1_700_000_301.0), ("s1", "soon", 0.0)],
)
def test_forged_or_stale_slack_requests_are_refused(secret: str, timestamp: str, now: float) -> None:
    """A wrong secret, a timestamp more than five minutes off or a bad timestamp is forged."""
    body = _click()
    with pytest.raises(slack.ForgedInteraction):
        slack.verify(["s1"], timestamp, body, slack.signature(secret, timestamp, body), now)


def test_other_slack_interactions_are_ignored() -> None:
    """A payload without our button is no acknowledgement; one without JSON is malformed."""
    other = urlencode({"payload": json.dumps({"type": "view_submission"})}).encode()
    assert slack.parse_ack(other) is None
    with pytest.raises(slack.MalformedInteraction):
        slack.parse_ack(b"text=hello")
