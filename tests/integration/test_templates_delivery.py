"""Message templates at send time: a claimed delivery from a real outbox, rendered for its channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from daemon.clock import SystemClock
from daemon.config import Config, parse_config
from daemon.core.model import ProviderState, Severity
from daemon.intake.accept import Acceptor, Submission
from daemon.rendering import Renderer, template_book
from daemon.store.sqlite import SqliteStore

ENV = {"HOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "TOKEN": "templates-test-token-0123456789"}
CONFIG = {
    "store": {"path": "unused.db"},
    "api": {"tokens": [{"name": "t", "token": "${TOKEN}"}]},
    "provider": {"name": "p", "smtp": {"host": "127.0.0.1", "port": 2525}, "mail_from": "bc@example.com"},
    "channels": {
        "email": {"type": "email", "to": ["ops@example.com"]},
        "hook": {
            "type": "webhook",
            "url": "http://127.0.0.1:9/x",
            "secret": "${HOOK_SECRET}",
            "allow_private": True,
            "message_template": {"subject": "hook: {{ subject }}"},
        },
        "pager": {
            "type": "webhook",
            "url": "http://127.0.0.1:9/y",
            "secret": "${HOOK_SECRET}",
            "allow_private": True,
        },
    },
    "routes": [
        {
            "name": "db",
            "match": {"labels": {"team": "db"}},
            "healthy": ["hook", "pager"],
            "outage": ["hook"],
            "templates": {
                "hook": {
                    "subject": "[{{ labels.team | upper }}] {{ subject }}",
                    "body": "{{ body }}\nRunbook: {{ labels.runbook }}",
                }
            },
            "routes": [
                {
                    "name": "db-pages",
                    "match": {"severity": ["critical"]},
                    "templates": {"pager": {"subject": "PAGE {{ subject }}"}},
                }
            ],
        },
        {"name": "web", "match": {"labels": {"team": "web"}}, "healthy": ["hook"], "outage": ["hook"]},
        {"name": "rest", "healthy": ["pager"], "outage": ["pager"]},
    ],
}


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, Config]]:
    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    yield store, parse_config(yaml.safe_dump(CONFIG), env=ENV)
    await store.close()


async def _rendered(
    store: SqliteStore, config: Config, channel: str, submission: Submission
) -> tuple[str, str]:
    clock = SystemClock()
    await Acceptor(store, config.policy, clock, lambda: None).accept([submission])
    now = clock.now()
    (claimed,) = await store.claim(channel, 1, now, now + timedelta(minutes=1))
    message = Renderer(lambda: ProviderState.HEALTHY, book=lambda: template_book(config)).render(
        channel, claimed
    )
    return message.subject, message.body


async def test_a_route_template_shapes_what_its_channel_sends(outbox: tuple[SqliteStore, Config]) -> None:
    """The route's template for the channel replaces subject and body, labels filled in."""
    store, config = outbox
    labels = {"team": "db", "runbook": "https://runbooks.example/disk"}
    sent = await _rendered(
        store, config, "hook", Submission(Severity.WARNING, "Disk full", "db-1", labels=labels)
    )
    assert sent == ("[DB] Disk full", "db-1\nRunbook: https://runbooks.example/disk")


async def test_a_child_route_inherits_and_adds_templates(outbox: tuple[SqliteStore, Config]) -> None:
    """A child route keeps the parent's template for one channel and its own for another."""
    store, config = outbox
    page = Submission(Severity.CRITICAL, "Replica lag", "5 min", labels={"team": "db"})
    assert await _rendered(store, config, "hook", page) == ("[DB] Replica lag", "5 min\nRunbook: ")


async def test_the_channels_own_template_applies_where_the_route_has_none(
    outbox: tuple[SqliteStore, Config],
) -> None:
    """A route without a template for the channel gets the channel's message_template."""
    store, config = outbox
    web = Submission(Severity.INFO, "Backup done", "ok", labels={"team": "web"})
    assert await _rendered(store, config, "hook", web) == ("hook: Backup done", "ok")


async def test_without_any_template_the_notifications_own_text_is_sent(
    outbox: tuple[SqliteStore, Config],
) -> None:
    """No template for the route nor the channel: subject and body are the notification's."""
    store, config = outbox
    other = Submission(Severity.INFO, "Backup done", "ok", labels={"team": "ops"})
    assert await _rendered(store, config, "pager", other) == ("Backup done", "ok")
