"""Alertmanager's webhook payload to submissions: pure mapping, no sockets."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.core.model import Severity
from daemon.intake.alertmanager import AM, AlertmanagerPayload, _digest, alert_key, submissions
from daemon.intake.webhook_config import AlertmanagerIntakeConfig

FIRING: dict[str, Any] = {
    "version": "4",
    "groupKey": '{}/{severity="critical"}:{alertname="ProbeFailure"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "backchannel",
    "groupLabels": {"alertname": "ProbeFailure"},
    "commonLabels": {"alertname": "ProbeFailure", "job": "http_checks"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager.example:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "ProbeFailure",
                "instance": "https://shop.example",
                "job": "http_checks",
                "severity": "page",
                "team": "payments",
            },
            "annotations": {
                "summary": "Shop is down",
                "description": "https://shop.example has failed probes for 5m",
                "runbook_url": "https://runbooks.example/probe",
            },
            "startsAt": "2024-02-06T13:08:45.828+01:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=probe_success+%3D%3D+0",
            "fingerprint": "1a30ba71cca2921f",
        },
        {
            "status": "firing",
            "labels": {"alertname": "ProbeFailure", "instance": "https://api.example", "job": "http_checks"},
            "annotations": {"description": "api probe failing\nsecond line"},
            "startsAt": "2024-02-06T12:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": "2b41cb82ddb3a320",
        },
    ],
}

CONFIG = AlertmanagerIntakeConfig()


def payload(data: dict[str, Any] | None = None) -> AlertmanagerPayload:
    return AlertmanagerPayload.model_validate_json(json.dumps(FIRING if data is None else data))


def resolved(data: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    out["status"] = "resolved"
    for alert in out["alerts"]:
        alert["status"] = "resolved"
        alert["endsAt"] = "2024-02-06T14:00:00Z"
    return out


def test_one_notification_per_alert() -> None:
    """By default every alert in the call becomes its own notification, from source alertmanager."""
    made = submissions(payload(), CONFIG)
    assert len(made) == 2
    assert {s.source for s in made} == {"alertmanager"}


def test_severity_comes_from_the_label_through_the_mapping() -> None:
    """`page` maps to critical; an alert without the label gets the default severity."""
    first, second = submissions(payload(), CONFIG)
    assert first.severity is Severity.CRITICAL
    assert second.severity is Severity.WARNING


def test_severity_label_mapping_and_default_are_configurable() -> None:
    """Another label, an extra mapping (case-insensitive) and another default apply."""
    data = copy.deepcopy(FIRING)
    data["alerts"][0]["labels"]["priority"] = "P1"
    config = AlertmanagerIntakeConfig(
        severity_label="priority", severities={"p1": Severity.CRITICAL}, default_severity=Severity.INFO
    )
    first, second = submissions(payload(data), config)
    assert (first.severity, second.severity) == (Severity.CRITICAL, Severity.INFO)


def test_unknown_label_value_gets_the_default() -> None:
    """A severity value nobody mapped falls back to default_severity rather than failing."""
    data = copy.deepcopy(FIRING)
    data["alerts"][0]["labels"]["severity"] = "apocalyptic"
    assert submissions(payload(data), CONFIG)[0].severity is Severity.WARNING


def test_subject_from_summary_then_description_then_alertname() -> None:
    """The subject names the status and alert, then the summary, else the description's first line."""
    first, second = submissions(payload(), CONFIG)
    assert first.subject == "[FIRING] ProbeFailure: Shop is down"
    assert second.subject == "[FIRING] ProbeFailure: api probe failing"
    data = copy.deepcopy(FIRING)
    data["alerts"][1]["annotations"] = {}
    assert submissions(payload(data), CONFIG)[1].subject == "[FIRING] ProbeFailure"


def test_body_is_readable() -> None:
    """The body carries the annotations, the labels, the start and the links back."""
    body = submissions(payload(), CONFIG)[0].body
    assert body.startswith("Shop is down\nhttps://shop.example has failed probes for 5m\n")
    assert "  runbook_url = https://runbooks.example/probe" in body
    assert "  team = payments" in body
    assert "Started: 2024-02-06T12:08:45.828000Z" in body
    assert "Source: http://prometheus.example:9090/graph?g0.expr=probe_success+%3D%3D+0" in body
    assert "Alertmanager: http://alertmanager.example:9093" in body


def test_labels_are_copied_for_routing() -> None:
    """The alert's labels travel with the notification, plus its status and fingerprint."""
    labels = submissions(payload(), CONFIG)[0].labels
    assert labels["team"] == "payments"
    assert labels["alert_status"] == "firing"
    assert labels["alert_fingerprint"] == "1a30ba71cca2921f"
    assert "follows" not in labels


def test_resend_has_the_same_idempotency_key() -> None:
    """Alertmanager's repeat of the same firing maps to the same keys, so the store drops it."""
    again = copy.deepcopy(FIRING)
    again["alerts"][0]["annotations"]["summary"] = "Shop is still down"
    keys = [s.idempotency_key for s in submissions(payload(), CONFIG)]
    assert keys == [s.idempotency_key for s in submissions(payload(again), CONFIG)]
    assert keys[0] == "alertmanager:1a30ba71cca2921f:2024-02-06T12:08:45.828000Z:firing"


def test_a_new_firing_episode_is_a_new_notification() -> None:
    """The same alert firing again later (new startsAt) is not a duplicate."""
    later = copy.deepcopy(FIRING)
    later["alerts"][0]["startsAt"] = "2024-02-07T09:00:00Z"
    assert (
        submissions(payload(), CONFIG)[0].idempotency_key
        != submissions(payload(later), CONFIG)[0].idempotency_key
    )


def test_resolved_alert_follows_the_firing_one() -> None:
    """A resolved alert is a new notification marked resolved that names the firing one's key."""
    firing = submissions(payload(), CONFIG)[0]
    done = submissions(payload(resolved(FIRING)), CONFIG)[0]
    assert done.idempotency_key != firing.idempotency_key
    assert done.labels["alert_status"] == "resolved"
    assert done.labels["follows"] == done.labels["resolves"] == firing.idempotency_key
    assert "resolves" not in firing.labels
    assert done.subject == "[RESOLVED] ProbeFailure: Shop is down"
    assert "Ended: 2024-02-06T14:00:00.000000Z" in done.body


def test_missing_fingerprint_is_derived_from_the_labels() -> None:
    """Without a fingerprint the labels identify the alert, independent of their order."""
    data = copy.deepcopy(FIRING)
    del data["alerts"][0]["fingerprint"]
    shuffled = copy.deepcopy(data)
    shuffled["alerts"][0]["labels"] = dict(reversed(list(data["alerts"][0]["labels"].items())))
    key = submissions(payload(data), CONFIG)[0].idempotency_key
    assert key == submissions(payload(shuffled), CONFIG)[0].idempotency_key
    assert key is not None and ":1a30ba71cca2921f:" not in key


def test_group_mode_makes_one_notification_with_the_worst_severity() -> None:
    """per: group gives one notification for the call, as severe as its most severe alert."""
    (group,) = submissions(payload(), AlertmanagerIntakeConfig(per="group"))
    assert group.severity is Severity.CRITICAL
    assert group.subject == "[FIRING:2] ProbeFailure (http_checks)"
    assert group.labels["alert_count"] == "2"
    assert group.labels["job"] == "http_checks"
    assert "--- FIRING ProbeFailure" in group.body
    assert "Shop is down" in group.body and "api probe failing" in group.body


def big_group(count: int) -> dict[str, Any]:
    """A group of ``count`` alerts of about 1 KiB each, as a fleet-wide outage sends it."""
    body = copy.deepcopy(FIRING)
    alert = FIRING["alerts"][0]
    body["alerts"] = [
        {**alert, "fingerprint": f"{n:016x}", "labels": {**alert["labels"], "instance": f"node-{n}"}}
        | {"annotations": {**alert["annotations"], "description": "x" * 800}}
        for n in range(count)
    ]
    return body


def test_a_group_of_thousands_is_taken_whole() -> None:
    """Alertmanager sends a group whole (max_alerts is unlimited by default): 5,000 alerts make
    5,000 notifications, not a refusal it would repeat at every flush."""
    assert len(submissions(payload(big_group(5000)), CONFIG)) == 5000


def test_a_group_of_thousands_says_how_many_its_body_leaves_out() -> None:
    """In group mode the body lists the alerts it has room for and names how many more there are."""
    (group,) = submissions(payload(big_group(1200)), AlertmanagerIntakeConfig(per="group"))
    assert group.labels["alert_count"] == "1200"
    shown = group.body.count("--- FIRING ProbeFailure")
    assert 10 < shown < 1200
    assert f"... and {1200 - shown} more alerts in this group" in group.body
    assert len(group.body) <= 64 * 1024 and group.body.endswith(
        "Alertmanager: http://alertmanager.example:9093"
    )


def test_group_key_changes_when_an_alert_joins() -> None:
    """A group re-sent unchanged is a duplicate; a group with a new member is not."""
    config = AlertmanagerIntakeConfig(per="group")
    grown = copy.deepcopy(FIRING)
    grown["alerts"].append({**FIRING["alerts"][1], "fingerprint": "3c52dc93eec4b431"})
    key = submissions(payload(), config)[0].idempotency_key
    assert key == submissions(payload(copy.deepcopy(FIRING)), config)[0].idempotency_key
    assert key != submissions(payload(grown), config)[0].idempotency_key


def test_resolved_group_follows_the_firing_group() -> None:
    """In group mode the resolution names the firing group's key."""
    config = AlertmanagerIntakeConfig(per="group")
    (firing,) = submissions(payload(), config)
    (done,) = submissions(payload(resolved(FIRING)), config)
    assert done.labels["follows"] == done.labels["resolves"] == firing.idempotency_key
    assert done.subject.startswith("[RESOLVED] ")


def partly_resolved(data: dict[str, Any]) -> dict[str, Any]:
    """The group still firing, its second alert resolved (Alertmanager sends it so once)."""
    out = copy.deepcopy(data)
    out["alerts"][1]["status"] = "resolved"
    out["alerts"][1]["endsAt"] = "2024-02-06T14:00:00Z"
    return out


def test_a_group_partly_resolved_is_a_new_version() -> None:
    """One alert of a firing group resolved: an update, not a duplicate of the firing group (its
    re-send was answered as one and the update lost)."""
    config = AlertmanagerIntakeConfig(per="group")
    (firing,) = submissions(payload(), config)
    (update,) = submissions(payload(partly_resolved(FIRING)), config)
    assert update.idempotency_key != firing.idempotency_key
    assert update.subject.startswith("[FIRING:1] ")
    (again,) = submissions(payload(partly_resolved(FIRING)), config)
    assert again.idempotency_key == update.idempotency_key


def test_a_resolved_member_no_longer_sets_the_groups_severity() -> None:
    """The critical alert resolved, a warning still fires: the group is as loud as the warning; a
    group resolved as a whole keeps the severity of its alerts (its resolution goes where it went)."""
    config = AlertmanagerIntakeConfig(per="group")
    data = copy.deepcopy(FIRING)
    data["alerts"] = list(reversed(data["alerts"]))  # the critical one (severity: page) second
    data["alerts"][1]["status"] = "resolved"
    (update,) = submissions(payload(data), config)
    assert update.severity is config.default_severity is not Severity.CRITICAL
    (done,) = submissions(payload(resolved(FIRING)), config)
    assert done.severity is Severity.CRITICAL


def test_a_firing_group_names_its_firing_alerts() -> None:
    """group_firing: the same for [A, B resolved] and [A] but for the '+' that says B resolved; a
    resolved group has none (its resolution is news)."""
    config = AlertmanagerIntakeConfig(per="group")
    (update,) = submissions(payload(partly_resolved(FIRING)), config)
    repeat = partly_resolved(FIRING)
    repeat["alerts"] = repeat["alerts"][:1]
    (again,) = submissions(payload(repeat), config)
    assert update.labels["group_firing"] == again.labels["group_firing"] + "+"
    (everything,) = submissions(payload(), config)
    assert everything.labels["group_firing"] != again.labels["group_firing"]
    (done,) = submissions(payload(resolved(FIRING)), config)
    assert "group_firing" not in done.labels


def test_group_keys_of_all_firing_and_all_resolved_groups_are_unchanged() -> None:
    """Members are marked only in a partly resolved group: the keys of other groups stay as an
    earlier release made them, so an upgrade does not page again for groups already told."""
    config = AlertmanagerIntakeConfig(per="group")
    # the keys the release before member marks made of these payloads
    before = "alertmanager:group:b089c9a89fc76047:7cff7d7cbd1b7519"
    assert submissions(payload(), config)[0].idempotency_key == f"{before}:firing"
    assert submissions(payload(resolved(FIRING)), config)[0].idempotency_key == f"{before}:resolved"


def test_every_version_of_a_group_names_its_lineage() -> None:
    """'supersedes' carries the group (its groupKey) on every version: the store closes the
    group's older versions with it. Without a groupKey versions are not linked."""
    config = AlertmanagerIntakeConfig(per="group")
    versions = [payload(), payload(partly_resolved(FIRING)), payload(resolved(FIRING))]
    lineages = {submissions(p, config)[0].labels["supersedes"] for p in versions}
    assert lineages == {"alertmanager:group:" + _digest([FIRING["groupKey"]])}
    other = copy.deepcopy(FIRING)
    other["groupKey"] = '{}/{severity="critical"}:{alertname="DiskFull"}'
    assert submissions(payload(other), config)[0].labels["supersedes"] not in lineages
    hand_written = copy.deepcopy(FIRING)
    del hand_written["groupKey"]
    assert "supersedes" not in submissions(payload(hand_written), config)[0].labels
    assert "supersedes" not in submissions(payload(), CONFIG)[0].labels  # per alert: no groups


def test_an_alerts_own_supersedes_label_is_dropped() -> None:
    """Only the mapping names a group: an alert labelled 'supersedes' closes nothing."""
    data = copy.deepcopy(FIRING)
    data["alerts"][0]["labels"]["supersedes"] = "alertmanager:group:other"
    data["commonLabels"]["supersedes"] = "alertmanager:group:other"
    assert "supersedes" not in submissions(payload(data), CONFIG)[0].labels
    group = submissions(payload(data), AlertmanagerIntakeConfig(per="group"))[0]
    assert group.labels["supersedes"] == "alertmanager:group:" + _digest([FIRING["groupKey"]])


def test_an_alerts_own_follows_label_is_dropped() -> None:
    """Only the mapping threads: a firing alert labelled 'follows' is not posted in another's thread."""
    data = copy.deepcopy(FIRING)
    data["alerts"][0]["labels"]["follows"] = "alertmanager:other:2024-01-01T00:00:00Z:firing"
    data["commonLabels"]["follows"] = "alertmanager:other:2024-01-01T00:00:00Z:firing"
    assert "follows" not in submissions(payload(data), CONFIG)[0].labels
    assert "follows" not in submissions(payload(data), AlertmanagerIntakeConfig(per="group"))[0].labels
    (done,) = submissions(payload(resolved(data)), CONFIG)[:1]
    assert done.labels["follows"] == done.labels["resolves"]


def test_an_alerts_own_resolves_label_is_dropped() -> None:
    """Only a resolution says what it resolves: an alert labelled 'resolves' closes nothing."""
    data = copy.deepcopy(FIRING)
    data["alerts"][0]["labels"]["resolves"] = "alertmanager:other:2024-01-01T00:00:00Z:firing"
    data["commonLabels"]["resolves"] = "alertmanager:other:2024-01-01T00:00:00Z:firing"
    assert "resolves" not in submissions(payload(data), CONFIG)[0].labels
    assert "resolves" not in submissions(payload(data), AlertmanagerIntakeConfig(per="group"))[0].labels


def test_group_key_may_be_left_out_of_a_hand_written_payload() -> None:
    """groupKey is Alertmanager's; a payload written by hand with only the spec's fields is taken."""
    data = copy.deepcopy(FIRING)
    del data["groupKey"]
    assert len(submissions(payload(data), CONFIG)) == 2
    (group,) = submissions(payload(data), AlertmanagerIntakeConfig(per="group"))
    assert group.idempotency_key is not None


def test_truncated_alerts_are_mentioned() -> None:
    """When Alertmanager's max_alerts cut the list, the group body and count say so."""
    data = copy.deepcopy(FIRING)
    data["truncatedAlerts"] = 5
    (group,) = submissions(payload(data), AlertmanagerIntakeConfig(per="group"))
    assert group.labels["alert_count"] == "7"
    assert "5 more alerts were left out" in group.body


def test_truncated_alerts_per_alert_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Per alert there is no group body to say so: a warning names how many were left out."""
    data = copy.deepcopy(FIRING)
    data["truncatedAlerts"] = 5
    with caplog.at_level(logging.WARNING):
        assert len(submissions(payload(data), CONFIG)) == 2
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "intake.truncated"]
    assert record.getMessage().startswith("Alertmanager left 5 alerts of receiver backchannel out")


def test_a_huge_annotation_leaves_the_labels_times_and_links_in_the_body() -> None:
    """The description is cut, not the end of the body."""
    data = copy.deepcopy(FIRING)
    data["alerts"][0]["annotations"]["description"] = "x" * 200_000
    data["alerts"][0]["annotations"]["dashboard"] = "y" * 200_000
    body = submissions(payload(data), CONFIG)[0].body
    assert len(body) < 16 * 1024
    assert "Labels:" in body and "Started: " in body
    assert body.rstrip().endswith("Alertmanager: http://alertmanager.example:9093")


def test_recipients_come_from_the_config() -> None:
    """Configured recipients are set on every notification (empty: the email channel's default)."""
    config = AlertmanagerIntakeConfig(recipients=["oncall@example.com"])
    assert {s.recipients for s in submissions(payload(), config)} == {("oncall@example.com",)}
    assert submissions(payload(), CONFIG)[0].recipients == ()


def test_alert_key_is_stable_across_time_zones() -> None:
    """The same instant written with another offset gives the same key."""
    data = copy.deepcopy(FIRING)
    data["alerts"][0]["startsAt"] = "2024-02-06T12:08:45.828Z"
    alert = payload(data).alerts[0]
    assert alert_key(AM, alert, "firing") == submissions(payload(), CONFIG)[0].idempotency_key


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": "3"}, "version"),
        ({"status": "burning"}, "status"),
        ({"alerts": [{"status": "firing", "labels": {}}]}, "alerts.0.startsAt"),
        ({"alerts": [{"status": "firing", "startsAt": "2024-02-06T12:00:00"}]}, "alerts.0.startsAt"),
        ({"alerts": "none"}, "alerts"),
    ],
)
def test_bad_payloads_are_refused_with_the_field(change: dict[str, Any], field: str) -> None:
    """A payload that is not Alertmanager's version 4 fails validation naming the field."""
    with pytest.raises(ValidationError) as caught:
        payload({**FIRING, **change})
    locs = [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]
    assert any(loc.startswith(field) for loc in locs), locs


def test_empty_alert_list_makes_nothing() -> None:
    """A call without alerts is valid and makes no notification."""
    assert submissions(payload({**FIRING, "alerts": []}), CONFIG) == []
