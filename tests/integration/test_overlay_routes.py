"""A route's own actions for the unknown and credentials states, as the daemon applies them: to
what is accepted while the state is in force (on both stores, which pick the plan at commit), and
to what is unsent when the state begins or ends, though the routing mode stays the same."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from daemon.app import Daemon
from daemon.core.health import HealthSnapshot
from daemon.core.model import Notification, ProviderState, Severity
from daemon.core.routing import NO_OVERRIDES, Matcher, Route, all_plans_for
from daemon.store.base import Store
from daemon.store.values import NewNotification
from tests.acceptance.harness import free_port
from tests.stand_ins.slack import SlackStandIn
from tests.stand_ins.twilio import TwilioStandIn
from tests.support import config_template, daemon_api, stand_ins, until

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROUTES = (
    Route(
        "pages",
        Matcher(severities=frozenset({Severity.CRITICAL})),
        ("email",),
        ("hook",),
        credentials=("hook",),
    ),
    Route("rest", Matcher(), ("email",), None),
)


def _new(n: int, severity: Severity = Severity.CRITICAL) -> NewNotification:
    notification = Notification(f"id-{n:05d}", f"key-{n}", T0, severity, f"subject {n}", "body")
    plans, overrides = all_plans_for(notification, ROUTES)
    return NewNotification(notification, plans, overrides=overrides)


def test_only_a_route_with_actions_of_its_own_carries_overrides() -> None:
    assert _new(1, Severity.INFO).overrides is NO_OVERRIDES
    plan = _new(2).overrides[ProviderState.CREDENTIALS, "healthy"]
    assert (plan.route, plan.mode, plan.steps) == ("pages", "healthy", ("hook",))
    assert (ProviderState.UNKNOWN, "healthy") not in _new(2).overrides


@pytest.mark.parametrize("state", [ProviderState.HEALTHY, ProviderState.CREDENTIALS])
async def test_the_store_commits_the_plan_of_the_state_in_force(store: Store, state: ProviderState) -> None:
    """Both stores read the state with the mode at commit: an intake worker, which does not
    know the state, gets the override all the same."""
    await store.save_provider(HealthSnapshot(credentials=("smtp",) if state != "healthy" else ()), None, T0)
    (accepted,) = await store.accept([_new(1)], T0)
    view = await store.notification(accepted.id)
    assert view is not None
    assert view.plan == (("hook",) if state == ProviderState.CREDENTIALS else ("email",))


TOKEN = "overlay-test-api-token-42"
SLACK_TOKEN = "xoxb-overlay-slack-token-0123456789"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
CONFIG = config_template("""\
  slack: {{type: slack, token: "${{SLACK_TOKEN}}", targets: ["#ops"], api_url: "{slack_url}/api/", pace: 50}}
routes:
  - {{name: all, match: {{}}, healthy: [email], outage: [slack], credentials: [slack], unknown: defer}}
""")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient, SlackStandIn]]:
    slack = SlackStandIn(SLACK_TOKEN)
    async with stand_ins(slack, TwilioStandIn(TWILIO_SID, "twilio-token-0123456789")) as smtp:
        text = CONFIG.format(
            store=tmp_path / "outbox.db",
            api_port=free_port(),
            smtp_port=smtp.port,
            slack_url=f"http://127.0.0.1:{slack.port}",
        )
        async with daemon_api(text, TOKEN, {"TOKEN": TOKEN, "SLACK_TOKEN": SLACK_TOKEN}) as (daemon, api):
            yield daemon, api, slack


async def _submit(api: httpx.AsyncClient, subject: str) -> str:
    answer = await api.post(
        "/v1/notifications", json={"severity": "critical", "subject": subject, "body": "b"}
    )
    assert answer.status_code == 202, answer.text
    nid: str = answer.json()["id"]
    return nid


async def _delivered_by(api: httpx.AsyncClient, nid: str) -> str | None:
    view = (await api.get(f"/v1/notifications/{nid}")).json()
    done = [d["channel"] for d in view["deliveries"] if d["state"] == "delivered"]
    return done[0] if done else None


async def test_accepted_in_an_overlay_state_takes_the_routes_action_for_it(
    world: tuple[Daemon, httpx.AsyncClient, SlackStandIn],
) -> None:
    daemon, api, _ = world
    await daemon.monitor.force(ProviderState.CREDENTIALS, "test")
    assert daemon.monitor.mode == "healthy"
    nid = await _submit(api, "in credentials")
    assert await until(lambda: _delivered_by(api, nid)) == "slack"
    await daemon.monitor.force(ProviderState.UNKNOWN, "test")
    held = await _submit(api, "in unknown")
    assert (await api.get(f"/v1/notifications/{held}")).json()["status"] == "held"


async def test_unsent_notifications_follow_the_state_in_and_out(
    world: tuple[Daemon, httpx.AsyncClient, SlackStandIn],
) -> None:
    """Held by ``unknown: defer``; sent by ``credentials: [slack]`` once that state begins; held
    again, then emailed when the provider is plain healthy again, the mode healthy throughout."""
    daemon, api, _ = world
    await daemon.monitor.force(ProviderState.UNKNOWN, "test")
    first = await _submit(api, "first")
    await daemon.monitor.force(ProviderState.CREDENTIALS, "test")
    assert await until(lambda: _delivered_by(api, first)) == "slack"
    await daemon.monitor.force(ProviderState.UNKNOWN, "test")
    second = await _submit(api, "second")
    assert (await api.get(f"/v1/notifications/{second}")).json()["status"] == "held"
    await daemon.monitor.release()
    assert await until(lambda: _delivered_by(api, second)) == "email"


async def test_the_replan_entering_an_overlay_owes_is_stored_before_it_runs(
    world: tuple[Daemon, httpx.AsyncClient, SlackStandIn], tmp_path: Path
) -> None:
    """Into unknown while the store refuses re-plans: the re-plan is stored as owed (a crash now
    leaves it to the next start, Rerouter.resume), and settled once it can commit."""
    daemon, api, _ = world
    await daemon.monitor.force(ProviderState.UNKNOWN, "test")
    held = await _submit(api, "held by unknown")
    assert await until(lambda: _held(api, held))
    refuse = sqlite3.connect(tmp_path / "outbox.db")
    refuse.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE OF plan ON notifications BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    refuse.commit()
    await daemon.monitor.force(ProviderState.CREDENTIALS, "test")
    assert await until(lambda: _owed(daemon.store))
    refuse.execute("DROP TRIGGER refuse")
    refuse.commit()
    refuse.close()
    assert await until(lambda: _delivered_by(api, held)) == "slack"
    assert await until(lambda: _settled(daemon.store))


async def _held(api: httpx.AsyncClient, nid: str) -> bool:
    return bool((await api.get(f"/v1/notifications/{nid}")).json()["status"] == "held")


async def _owed(store: Store) -> bool:
    return bool(await store.owed_replans())


async def _settled(store: Store) -> bool:
    return not await store.owed_replans()
