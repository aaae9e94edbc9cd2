"""Message templates: checked at load, rendered per notification, never costing a notification."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.config_templates import MessageTemplateConfig
from daemon.message_templates import TemplateError, apply, compile_pair, context


def _values(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "notification_id": "01ABC",
        "severity": "critical",
        "subject": "Disk full",
        "body": "db-1 is full",
        "source": "alertmanager",
        "recipients": ("ops@example.com",),
        "labels": {"team": "db", "runbook": "https://runbooks.example/disk"},
        "created_at": datetime(2024, 3, 31, 1, 30, tzinfo=UTC),
        "route": "db",
        "mode": "outage",
        "provider_state": "outage",
        "attempt": 1,
        "drill": False,
    }
    return context(**(base | overrides))


def test_subject_and_body_render_from_the_documented_variables() -> None:
    """Both parts see the notification, its labels and where it is routed."""
    template = compile_pair(
        "[{{ severity | upper }}] {{ labels.team }}: {{ subject }}",
        "{{ body }}\nRunbook: {{ labels.runbook }}\nRoute {{ route }} at {{ created_at }}",
    )
    subject, body = template.render(_values(), "Disk full", "db-1 is full")
    assert subject == "[CRITICAL] db: Disk full"
    assert body == "db-1 is full\nRunbook: https://runbooks.example/disk\nRoute db at 2024-03-31T01:30:00Z"


def test_a_part_left_out_keeps_the_notifications_own_text() -> None:
    """A template with only a subject leaves the body as it was."""
    subject, body = compile_pair("{{ subject }}!", None).render(_values(), "Disk full", "db-1 is full")
    assert (subject, body) == ("Disk full!", "db-1 is full")


def test_a_subject_is_always_one_line() -> None:
    """Newlines a template produces in a subject collapse to spaces."""
    subject, _ = compile_pair("{{ subject }}\n\n{{ labels.team }}", None).render(_values(), "s", "b")
    assert subject == "Disk full db"


def test_a_missing_label_reads_empty() -> None:
    """Labels vary per notification, so one it lacks renders as an empty string."""
    subject, _ = compile_pair("[{{ labels.cluster }}]{{ subject }}", None).render(_values(), "s", "b")
    assert subject == "[]Disk full"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("{{ subjct }}", "'subjct' is undefined"),
        ("{% if %}", "subject: line 1"),
        ("{{ subject.__class__.__mro__ }}", "subject"),
    ],
)
def test_errors_are_caught_when_compiling(subject: str, expected: str) -> None:
    """Misspelt variables, bad syntax and sandbox escapes are refused before anything is sent."""
    with pytest.raises(TemplateError, match=expected.replace("(", r"\(")):
        compile_pair(subject, None)


def test_a_recursive_template_is_a_configuration_error() -> None:
    """Runaway recursion is a field error of the config, not a RecursionError crashing the load."""
    with pytest.raises(ValidationError, match="template body: maximum recursion"):
        MessageTemplateConfig(body="{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")


def test_configuration_reports_the_template_error_as_a_field_error() -> None:
    """The config model refuses a broken template, naming the part."""
    with pytest.raises(ValidationError, match="template body: line 1"):
        MessageTemplateConfig(body="{% for x in %}")
    with pytest.raises(ValidationError, match="subject, body or both"):
        MessageTemplateConfig()


def test_a_render_error_at_send_time_falls_back_to_the_notifications_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A template meeting an unexpected value does not cost the notification; the failure is logged."""
    template = compile_pair("{{ (labels.count | int) // (labels.zero | int) }}", None)
    with caplog.at_level(logging.WARNING):
        result = apply(template, _values(), subject="Disk full", body="b", where="route db, channel slack")
    assert result == ("Disk full", "b")
    assert [r.event for r in caplog.records] == ["template.failed"]  # type: ignore[attr-defined]


def test_an_unexpected_error_type_still_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    """A KeyError (``str.format`` naming a label the notification lacks) costs nothing but the template."""
    template = compile_pair('{{ "{team}: ".format(**labels) }}{{ subject }}', None)
    with caplog.at_level(logging.WARNING):
        result = apply(template, _values(labels={}), subject="Disk full", body="b", where="channels.sms")
    assert result == ("Disk full", "b")
    assert [r.event for r in caplog.records] == ["template.failed"]  # type: ignore[attr-defined]
    assert "KeyError('team')" in caplog.records[0].getMessage()
