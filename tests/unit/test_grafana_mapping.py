"""Grafana's unified alerting webhook payload to submissions: pure mapping, no sockets."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.core.model import Severity
from daemon.intake.alertmanager import AlertmanagerPayload, submissions
from daemon.intake.grafana import GrafanaPayload, grafana_submissions
from daemon.intake.webhook_config import AlertmanagerIntakeConfig, GrafanaIntakeConfig

# The documented example (Grafana 10/11 webhook contact point), one alert given a severity.
DOCUMENTED: dict[str, Any] = {
    "receiver": "My Super Webhook",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "High memory usage",
                "team": "blue",
                "zone": "us-1",
                "severity": "critical",
            },
            "annotations": {
                "description": "The system has high memory usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone us-1",
            },
            "startsAt": "2021-10-12T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana",
            "dashboardURL": "https://play.grafana.org/d/abc",
            "panelURL": "",
            "values": {"B": 44.23943737541908, "C": 1},
        },
        {
            "status": "firing",
            "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"},
            "annotations": {"description": "The system has high CPU usage"},
            "startsAt": "2021-10-12T09:56:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/d1rdpdv7k/edit",
            "fingerprint": "bc97ff14869b13e3",
            "silenceURL": "",
            "dashboardURL": "",
            "panelURL": "",
            "valueString": "[ metric='' labels={} value=47043.702386305304 ]",
        },
    ],
    "groupLabels": {},
    "commonLabels": {"team": "blue"},
    "commonAnnotations": {},
    "externalURL": "https://play.grafana.org/",
    "version": "1",
    "groupKey": "{}:{}",
    "truncatedAlerts": 0,
    "title": "[FIRING:2]  (blue)",
    "state": "alerting",
    "message": "**Firing**\n\nLabels:\n - alertname = T2\n",
}

CONFIG = GrafanaIntakeConfig()


def payload(data: dict[str, Any] | None = None) -> GrafanaPayload:
    return GrafanaPayload.model_validate_json(json.dumps(DOCUMENTED if data is None else data))


def test_documented_example_maps_to_one_notification_per_alert() -> None:
    """Grafana's documented body gives a notification per alert from source grafana."""
    first, second = grafana_submissions(payload(), CONFIG)
    assert (first.source, second.source) == ("grafana", "grafana")
    assert first.severity is Severity.CRITICAL
    assert second.severity is Severity.WARNING
    assert first.subject == "[FIRING] High memory usage: This alert was triggered for zone us-1"
    assert first.labels["team"] == "blue"
    assert first.labels["alert_status"] == "firing"


def test_body_shows_values_and_grafana_links() -> None:
    """The evaluated values and the dashboard, silence and source links are in the body."""
    first, second = grafana_submissions(payload(), CONFIG)
    assert "Values: B=44.2394, C=1" in first.body
    assert "Dashboard: https://play.grafana.org/d/abc" in first.body
    assert "Silence: https://play.grafana.org/alerting/silence/new?alertmanager=grafana" in first.body
    assert "Panel:" not in first.body
    assert "Grafana: https://play.grafana.org/" in first.body
    assert "Values: [ metric='' labels={} value=47043.702386305304 ]" in second.body


@pytest.mark.parametrize(
    ("value", "shown"),
    [(1048576, "1048576"), (53687091200, "53687091200"), (1234567.25, "1234567"), (0.00012345, "0.00012345")],
)
def test_values_keep_their_whole_digits(value: float, shown: str) -> None:
    """A large evaluated value is shown with every digit of its whole part, not rounded to six."""
    data = copy.deepcopy(DOCUMENTED)
    data["alerts"][0]["values"] = {"B": value}
    first, _ = grafana_submissions(payload(data), CONFIG)
    assert f"Values: B={shown}\n" in first.body


def test_keys_do_not_collide_with_alertmanager() -> None:
    """The same fingerprint from Grafana and from Alertmanager are different notifications."""
    as_am = AlertmanagerPayload.model_validate_json(json.dumps({**DOCUMENTED, "version": "4"}))
    grafana_key = grafana_submissions(payload(), CONFIG)[0].idempotency_key
    am_key = submissions(as_am, AlertmanagerIntakeConfig())[0].idempotency_key
    assert grafana_key is not None and grafana_key.startswith("grafana:c6eadffa33fcdf37:")
    assert grafana_key != am_key


def test_resolved_follows_the_firing_alert() -> None:
    """A resolved Grafana alert names the firing notification's key in `follows` and `resolves`."""
    done = copy.deepcopy(DOCUMENTED)
    done["status"] = "resolved"
    done["alerts"][0].update(status="resolved", endsAt="2021-10-12T10:51:03Z")
    firing = grafana_submissions(payload(), CONFIG)[0]
    resolved = grafana_submissions(payload(done), CONFIG)[0]
    key = firing.idempotency_key
    assert resolved.labels == {**firing.labels, "alert_status": "resolved", "follows": key, "resolves": key}


def test_group_mode() -> None:
    """per: group gives one notification with the worst severity of the group."""
    (group,) = grafana_submissions(payload(), GrafanaIntakeConfig(per="group"))
    assert group.severity is Severity.CRITICAL
    assert group.subject == "[FIRING:2] (blue)"
    assert "--- FIRING High CPU usage" in group.body


def test_group_mode_in_grafanas_own_words() -> None:
    """With use_templates, the contact point's templated title and message are the subject and
    body (Grafana's link after it); without, they are not used."""
    config = GrafanaIntakeConfig(per="group", use_templates=True)
    custom = {**DOCUMENTED, "title": "Payments:  2 alerts", "message": "Memory and CPU high in blue\n"}
    (group,) = grafana_submissions(payload(custom), config)
    assert group.subject == "Payments: 2 alerts"
    assert group.body == "Memory and CPU high in blue\n\nGrafana: https://play.grafana.org/"
    assert group.severity is Severity.CRITICAL and group.labels["alert_count"] == "2"
    (plain,) = grafana_submissions(payload(custom), GrafanaIntakeConfig(per="group"))
    assert plain.subject == "[FIRING:2] (blue)" and "Memory and CPU" not in plain.body


def test_use_templates_keeps_backchannels_text_where_a_template_is_empty() -> None:
    """An empty title or message (a template rendering nothing) leaves backchannel's own."""
    config = GrafanaIntakeConfig(per="group", use_templates=True)
    (group,) = grafana_submissions(payload({**DOCUMENTED, "title": " ", "message": ""}), config)
    assert group.subject == "[FIRING:2] (blue)"
    assert "--- FIRING High CPU usage" in group.body


def test_use_templates_needs_group_mode() -> None:
    """Grafana's title and message are the group's: with per: alert the option is a config error."""
    with pytest.raises(ValidationError, match="use_templates needs per: group"):
        GrafanaIntakeConfig(use_templates=True)


def test_legacy_alerting_payload_is_refused() -> None:
    """Grafana's legacy (pre-unified) webhook body is not this format: validation names `alerts`."""
    legacy = {
        "title": "[Alerting] Test",
        "ruleId": 1,
        "ruleName": "Test",
        "state": "alerting",
        "evalMatches": [],
    }
    with pytest.raises(ValidationError) as caught:
        payload(legacy)
    assert any(e["loc"] == ("alerts",) for e in caught.value.errors())
