"""slack_thread_ts is backchannel's own: no intake passes it on from a sender. Pure, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from channels.slack import THREAD_LABEL
from daemon.api.models import SUBMIT
from daemon.core.model import CHANNEL_THREAD_LABELS
from daemon.intake.alertmanager import AlertmanagerPayload, submissions
from daemon.intake.grafana import GrafanaPayload, grafana_submissions
from daemon.intake.webhook_config import AlertmanagerIntakeConfig, GrafanaIntakeConfig

FOREIGN_THREAD = "C0HR:1714564800.000100"


def _document(**extra: Any) -> dict[str, Any]:
    labels = {"alertname": "DiskFull", "severity": "critical", THREAD_LABEL: FOREIGN_THREAD}
    alert = {"status": "firing", "labels": labels, "startsAt": "2024-05-01T12:00:00Z", "fingerprint": "0a1b"}
    return {
        "version": "4",
        "receiver": "backchannel",
        "status": "firing",
        "groupKey": '{}:{alertname="DiskFull"}',
        "groupLabels": {"alertname": "DiskFull", THREAD_LABEL: FOREIGN_THREAD},
        "commonLabels": labels,
        "alerts": [alert],
        **extra,
    }


def test_the_reserved_name_is_the_slack_channels() -> None:
    """The intakes reserve the very label the Slack channel threads by."""
    assert THREAD_LABEL in CHANNEL_THREAD_LABELS


@pytest.mark.parametrize("per", ["alert", "group"])
def test_alertmanager_drops_an_alerts_slack_thread_ts(per: str) -> None:
    """An alert (or its group) labelled slack_thread_ts keeps its other labels, not that one."""
    payload = AlertmanagerPayload.model_validate_json(json.dumps(_document()))
    [submission] = submissions(payload, AlertmanagerIntakeConfig(per=per))  # type: ignore[arg-type]
    assert THREAD_LABEL not in submission.labels
    assert submission.labels["alertname"] == "DiskFull"


@pytest.mark.parametrize("per", ["alert", "group"])
def test_grafana_drops_an_alerts_slack_thread_ts(per: str) -> None:
    """Grafana's mapping (Alertmanager's) drops it too, templated or not."""
    payload = GrafanaPayload.model_validate_json(json.dumps(_document(version="1", title="t", message="m")))
    config = GrafanaIntakeConfig(per=per, use_templates=per == "group")  # type: ignore[arg-type]
    [submission] = grafana_submissions(payload, config)
    assert THREAD_LABEL not in submission.labels


def test_api_refuses_slack_thread_ts() -> None:
    """POST /v1/notifications with the label fails validation (a 422 naming the labels)."""
    body = {"severity": "critical", "subject": "x", "labels": {THREAD_LABEL: FOREIGN_THREAD}}
    with pytest.raises(ValidationError, match="slack_thread_ts' is reserved"):
        SUBMIT.validate_json(json.dumps(body))
