"""Webhook body templates: the sandbox, JSON safety, config-time checks and the shipped presets."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from channels.base import ChannelError, OutboundMessage
from channels.webhook_templates import (
    PRESETS,
    TemplateError,
    check_template,
    compile_template,
    load_preset,
    render_template,
    template_for,
)

ROUTING_KEY = "R0ut1ngKeyR0ut1ngKeyR0ut1ngKey12"
MESSAGE = OutboundMessage(
    notification_id="01HX0000000000000000000007",
    idempotency_key="alertmanager:db1-down",
    severity="critical",
    subject="Database down",
    body="db1 is not answering",
    created_at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    source="alertmanager",
    recipients=("oncall@example.com",),
    labels={"host": "db1", "team": "data"},
    attempt=2,
    provider_state="outage",
)


def _render(source: str, message: OutboundMessage = MESSAGE, **options: str) -> Any:
    return json.loads(render_template(compile_template(source), message, options=options))


def _pagerduty(message: OutboundMessage = MESSAGE, **options: str) -> Any:
    rendered = render_template(
        load_preset("pagerduty"), message, options={"routing_key": ROUTING_KEY, **options}
    )
    return json.loads(rendered)


def _teams(message: OutboundMessage = MESSAGE) -> Any:
    return json.loads(render_template(load_preset("teams"), message))


# --- the template language ------------------------------------------------------------------------


def test_every_documented_variable_is_available() -> None:
    """The OutboundMessage fields, provider_state, drill and options can all be used."""
    names = [
        "notification_id", "idempotency_key", "severity", "subject", "body", "source", "recipients",
        "labels", "created_at", "attempt", "provider_state", "drill", "options",
    ]  # fmt: skip
    rendered = _render("{" + ", ".join(f'"{n}": {{{{ {n} | tojson }}}}' for n in names) + "}", k="v")
    assert rendered["created_at"] == "2024-05-01T12:30:00Z"
    assert rendered["labels"] == {"host": "db1", "team": "data"}
    assert rendered["recipients"] == ["oncall@example.com"]
    assert (rendered["attempt"], rendered["drill"], rendered["options"]) == (2, False, {"k": "v"})


def test_tojson_keeps_hostile_text_inside_its_string() -> None:
    """Quotes, backslashes, newlines and markup in notification text cannot break the JSON."""
    subject = 'x", "severity": "info\\"}\n<script>&'
    rendered = _render('{"s": {{ subject | tojson }}}', dataclasses.replace(MESSAGE, subject=subject))
    assert rendered == {"s": subject}


def test_autoescape_is_off() -> None:
    """Text is not HTML-escaped (the output is JSON or plain text, not HTML)."""
    message = dataclasses.replace(MESSAGE, subject="a < b & c")
    assert (
        render_template(compile_template("{{ subject }}"), message, content_type="text/plain") == b"a < b & c"
    )


def test_syntax_error_names_the_line() -> None:
    """compile_template raises TemplateError with the line of the mistake."""
    with pytest.raises(TemplateError, match="line 3"):
        compile_template('{\n  "a": 1,\n  "b": {{ subject | tojson }\n}')


def test_undefined_variable_is_caught_by_the_check() -> None:
    """StrictUndefined: a misspelt variable fails check_template, naming it and its line."""
    template = compile_template('{\n  "s": {{ subjet | tojson }}\n}')
    with pytest.raises(TemplateError, match=r"line 2: 'subjet' is undefined"):
        check_template(template)


def test_sandbox_refuses_python_internals() -> None:
    """Attribute access to dunder members is a template error, not code execution."""
    template = compile_template("{{ subject.__class__.__mro__ | tojson }}")
    with pytest.raises(TemplateError, match="unsafe"):
        check_template(template)


def test_sandbox_refuses_mutation() -> None:
    """The immutable sandbox refuses methods that change what the template was given."""
    template = compile_template('{{ labels.update({"x": "y"}) }}{{ labels | tojson }}')
    with pytest.raises(TemplateError, match="unsafe"):
        check_template(template)


def test_invalid_json_is_a_permanent_error_with_a_reason() -> None:
    """A rendering that does not parse is a permanent ChannelError saying where it broke."""
    with pytest.raises(ChannelError) as info:
        render_template(compile_template('{"s": {{ subject }}}'), MESSAGE)
    assert info.value.permanent
    assert "rendered body is not valid JSON" in str(info.value)
    assert "line 1 column 7" in str(info.value)


def test_check_rejects_invalid_json_at_config_load() -> None:
    """check_template catches a body that is not JSON before any notification is sent."""
    with pytest.raises(TemplateError, match="not valid JSON"):
        check_template(compile_template('{"s": {{ subject }}}'))


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_other_content_types_are_not_parsed(content_type: str) -> None:
    """Only JSON content types (application/json, *+json) must render valid JSON."""
    check_template(compile_template("text={{ subject | urlencode }}"), content_type=content_type)


def test_json_suffix_content_type_is_parsed() -> None:
    """application/vnd.example+json is JSON too."""
    with pytest.raises(TemplateError):
        check_template(compile_template("{{ subject }}"), content_type="application/vnd.example+json")


def test_errors_never_quote_option_values() -> None:
    """A failure on an option value (a routing key is a credential) names the line but not the value."""
    template = compile_template("\n{{ (options.routing_key | int(base=10, default=none)) + 1 }}")
    with pytest.raises(TemplateError) as info:
        check_template(template, options={"routing_key": ROUTING_KEY})
    assert "line 2" in str(info.value)
    assert ROUTING_KEY not in str(info.value)


def test_template_and_preset_are_exclusive() -> None:
    """A channel has one body: a template or a preset."""
    with pytest.raises(TemplateError, match="not both"):
        template_for("{}", "teams")
    assert template_for(None, None) is None


def test_unknown_preset_lists_the_known_ones() -> None:
    """A misspelt preset names the presets that exist."""
    with pytest.raises(TemplateError, match="pagerduty, teams"):
        load_preset("pagerduty2")


# --- presets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_pass_the_config_check(preset: str) -> None:
    """Every shipped preset renders valid JSON for every severity."""
    check_template(load_preset(preset), options={"routing_key": ROUTING_KEY})


def test_pagerduty_event_has_the_documented_shape() -> None:
    """An Events API v2 trigger: routing_key, dedup_key = the idempotency key, payload fields."""
    event = _pagerduty()
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "alertmanager:db1-down"
    payload = event["payload"]
    assert payload["summary"] == "Database down"
    assert payload["source"] == "alertmanager"
    assert payload["severity"] == "critical"
    assert payload["timestamp"] == "2024-05-01T12:30:00Z"
    assert payload["custom_details"]["labels"] == {"host": "db1", "team": "data"}
    assert payload["custom_details"]["body"] == "db1 is not answering"


def test_pagerduty_resolution_resolves_the_alert_its_firing_opened() -> None:
    """An Alertmanager resolution: event_action resolve, dedup_key the firing one's key."""
    firing = dataclasses.replace(MESSAGE, idempotency_key="alertmanager:fp1:2024-05-01T12:30:00Z:firing")
    key = firing.idempotency_key
    labels = {"alert_status": "resolved", "resolves": key, "follows": key}
    resolved = dataclasses.replace(
        MESSAGE, idempotency_key="alertmanager:fp1:2024-05-01T12:30:00Z:resolved", labels=labels
    )
    opened, closed = _pagerduty(firing), _pagerduty(resolved)
    assert (opened["event_action"], closed["event_action"]) == ("trigger", "resolve")
    assert opened["dedup_key"] == closed["dedup_key"] == firing.idempotency_key


def test_pagerduty_versions_of_an_alert_group_update_one_alert() -> None:
    """Every version of a group (labels.supersedes) has the group's dedup_key; the resolved one
    resolves it."""
    lineage = "alertmanager:group:0123456789abcdef"
    versions = [
        dataclasses.replace(MESSAGE, idempotency_key=f"{lineage}:{n}:firing", labels={"supersedes": lineage})
        for n in ("a", "b")
    ]
    done = dataclasses.replace(
        MESSAGE,
        idempotency_key=f"{lineage}:b:resolved",
        labels={"supersedes": lineage, "alert_status": "resolved", "resolves": f"{lineage}:b:firing"},
    )
    events = [_pagerduty(m) for m in [*versions, done]]
    assert [e["dedup_key"] for e in events] == [lineage] * 3
    assert [e["event_action"] for e in events] == ["trigger", "trigger", "resolve"]


def test_pagerduty_dedup_key_is_cut_to_its_limit() -> None:
    """dedup_key is at most 255 characters (an API caller's key may be as long)."""
    assert len(_pagerduty(dataclasses.replace(MESSAGE, idempotency_key="k" * 300))["dedup_key"]) == 255


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("critical", "critical"), ("high", "error"), ("warning", "warning"), ("info", "info")],
)
def test_pagerduty_severity_mapping(ours: str, theirs: str) -> None:
    """Our four severities map onto PagerDuty's critical/error/warning/info."""
    assert _pagerduty(dataclasses.replace(MESSAGE, severity=ours))["payload"]["severity"] == theirs


def test_pagerduty_summary_is_cut_to_its_limit() -> None:
    """payload.summary is at most 1024 characters (the documented maximum)."""
    summary = _pagerduty(dataclasses.replace(MESSAGE, subject="x" * 5000))["payload"]["summary"]
    assert len(summary) == 1024
    assert summary.endswith("…")


def test_pagerduty_drill_is_marked() -> None:
    """A drill's summary says so, so nobody is paged for real without noticing."""
    assert _pagerduty(dataclasses.replace(MESSAGE, drill=True))["payload"]["summary"].startswith("[DRILL] ")


def test_pagerduty_source_option_overrides() -> None:
    """options.source names the affected system when the notification's source is a tool name."""
    assert _pagerduty(source="db1.example.com")["payload"]["source"] == "db1.example.com"


def test_pagerduty_without_routing_key_fails_the_check() -> None:
    """The routing key is required: a channel without it fails at configuration load."""
    with pytest.raises(TemplateError, match="routing_key"):
        check_template(load_preset("pagerduty"))


def test_teams_message_wraps_an_adaptive_card() -> None:
    """A message with one Adaptive Card attachment (the only format Workflows accept)."""
    message = _teams()
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] in ("1.4", "1.5")
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"


def test_teams_card_shows_severity_subject_body_and_id() -> None:
    """The card's text blocks and facts carry what a responder needs."""
    body = _teams()["attachments"][0]["content"]["body"]
    texts = [block["text"] for block in body if block["type"] == "TextBlock"]
    assert texts == ["CRITICAL", "Database down", "db1 is not answering"]
    [facts] = [block["facts"] for block in body if block["type"] == "FactSet"]
    values = {fact["title"]: fact["value"] for fact in facts}
    assert values["Notification"] == "01HX0000000000000000000007"
    assert values["Severity"] == "critical"
    assert (values["host"], values["team"]) == ("db1", "data")


def test_teams_severity_color_and_drill() -> None:
    """Critical is red (Attention); a drill is labelled in the headline."""
    headline = _teams(dataclasses.replace(MESSAGE, drill=True))["attachments"][0]["content"]["body"][0]
    assert headline == {
        "type": "TextBlock",
        "text": "DRILL · CRITICAL",
        "weight": "Bolder",
        "color": "Attention",
    }


def test_check_refuses_a_label_written_into_a_json_string_without_tojson() -> None:
    """A label interpolated raw into a JSON string is refused at load, not left to inject keys later."""
    with pytest.raises(TemplateError, match="not valid JSON"):
        check_template(compile_template('{"host": "{{ labels.host }}", "team": "{{ labels.team }}"}'))


def test_a_recursive_template_is_a_template_error_at_load_and_permanent_at_send() -> None:
    """Runaway recursion is reported like any template error, never escapes as RecursionError."""
    template = compile_template("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")
    with pytest.raises(TemplateError, match="recursion"):
        check_template(template)
    with pytest.raises(ChannelError) as info:
        render_template(template, MESSAGE)
    assert info.value.permanent


@pytest.mark.parametrize(
    "source",
    [
        '{"alert": "{{ labels.get("alertname") }}"}',
        '{"alert": "{{ labels.get("alertname", "none") }}"}',
    ],
)
def test_a_label_read_with_get_into_a_string_fails_the_check(source: str) -> None:
    """A label the sample lacks, read with ``get`` and written without ``tojson``: refused at load,
    before a notification whose label holds a quote breaks the body (or injects keys into it)."""
    with pytest.raises(TemplateError, match="not valid JSON"):
        check_template(compile_template(source))


def test_labels_read_with_get_and_tojson_pass_the_check() -> None:
    check_template(
        compile_template(
            '{"alert": {{ labels.get("alertname", "none") | tojson }}, "all": {{ labels | tojson }}}'
        )
    )


@pytest.mark.parametrize(
    "source", ['{"i": {{ labels.instance | tojson }}}', '{"i": {{ labels["instance"] | tojson }}}']
)
def test_a_label_the_sample_lacks_read_directly_is_refused_with_the_way_to_read_it(source: str) -> None:
    """Refused at load, as a notification without the label would fail its delivery for good; the
    error names the label and ``labels.get``, not the check's internal class."""
    with pytest.raises(TemplateError) as info:
        check_template(compile_template(source))
    message = str(info.value)
    assert "labels has no 'instance'" in message and "labels.get('instance')" in message, message
    assert "_Probing" not in message
