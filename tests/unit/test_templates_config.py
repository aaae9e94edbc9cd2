"""Route templates in the configuration: checked at load, inherited by child routes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from daemon.config import parse_config
from daemon.rendering import template_book
from tests.unit.test_config import ENV, base, problems_of
from tests.unit.test_doc_snippets import BASE


def _with_templates(templates: dict[str, Any], child: dict[str, Any] | None = None) -> dict[str, Any]:
    data = base()
    data["routes"][0]["templates"] = templates
    if child is not None:
        data["routes"][0]["routes"] = [child]
    return data


def test_route_templates_are_compiled_by_route_and_channel() -> None:
    """A route's templates are found by its name and the channel's."""
    data = _with_templates({"incident": {"subject": "[{{ labels.team }}] {{ subject }}"}})
    templates = parse_config(yaml.safe_dump(data), env=ENV).templates()
    assert list(templates) == ["critical"]
    assert set(templates["critical"]) == {"incident"}


def test_children_inherit_templates_for_channels_they_do_not_name() -> None:
    """A child route keeps its parent's template for a channel unless it has its own."""
    child = {
        "name": "db",
        "match": {"labels": {"team": "db"}},
        "templates": {"email": {"body": "db: {{ body }}"}},
    }
    data = _with_templates({"incident": {"subject": "{{ subject }}!"}}, child)
    templates = parse_config(yaml.safe_dump(data), env=ENV).templates()
    assert set(templates["db"]) == {"incident", "email"}
    assert templates["db"]["incident"] is not None


def test_a_broken_template_names_the_file_line_and_path() -> None:
    """A syntax error or unknown variable is a configuration error at its path."""
    problems = problems_of(_with_templates({"incident": {"body": "{{ labels.team }"}}))
    assert [p.path for p in problems] == ["routes[0].templates.incident"], problems
    assert "template body: line 1" in problems[0].message
    assert problems[0].line is not None


def test_a_template_for_an_unknown_channel_is_refused() -> None:
    """Templates are keyed by channel names the configuration defines."""
    problems = problems_of(_with_templates({"pager": {"subject": "{{ subject }}"}}))
    assert any("unknown channel 'pager'" in p.message for p in problems), problems


def test_the_documented_example_loads() -> None:
    """docs/templates.md's configuration is valid, templates included."""
    page = Path(__file__).resolve().parents[2] / "docs" / "templates.md"
    (block,) = re.findall(r"```yaml\n(.*?)```", page.read_text(), re.DOTALL)
    text = BASE + block
    env = {name: "x0123456789" for name in re.findall(r"\$\{(\w+)\}", text)}
    config = parse_config(text, filename="templates.md", env=env)
    book = template_book(config)
    assert book.find("db", "slack-db") is not None and book.find("db", "sms-oncall") is not None
    assert book.find("default", "email") is None
