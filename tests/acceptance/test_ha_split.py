"""Split views: three `backchannel run` processes on one PostgreSQL, each checking its own stand-ins.

Each node's provider check goes to an SMTP server of its own and its control check (TCP) to a
port of its own, so the test gives every node a different view of the world: one node whose
own network fails is outvoted, and abstains (its DOWN is no vote, so it and one node seeing the
provider down are no quorum); two nodes seeing the provider down (controls up) declare it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.harness import FAILOVER_ROUTES, until
from tests.acceptance.test_ha import HaNode, leader_row
from tests.integration.conftest import admin, postgres_server, postgres_url
from tests.servers import SmtpServer, WebhookReceiver

__all__ = ["postgres_server", "postgres_url"]  # fixtures, used by name

EVERY = "400ms"
#: rounds the leader must decide with the split view in place before "no outage" is believed
ROUNDS = 6


@dataclass
class Vantage:
    """A node and the world as it sees it: its provider (SMTP) and its control target (TCP)."""

    node: HaNode
    provider: SmtpServer
    control: WebhookReceiver  # any listening socket: stopped, the port refuses


@pytest.fixture
def split(tmp_path: Path, postgres_url: str) -> Iterator[tuple[list[Vantage], WebhookReceiver, str]]:
    """Three started nodes (nodes_quorum 2), each with its own provider and control stand-ins."""
    suffix = uuid.uuid4().hex[:6]
    with ExitStack() as stack:
        hook = stack.enter_context(WebhookReceiver())
        views = []
        for i in range(3):
            provider = stack.enter_context(SmtpServer())
            control = stack.enter_context(WebhookReceiver())
            node = HaNode(
                tmp_path / f"n{i}",
                postgres_url,
                f"n{i}-{suffix}",
                store_extra=", nodes_quorum: 2, vantage_fresh: 5s",
                edits=_checks(control.port),
                smtp_port=provider.port,
                hook_url=hook.url,
                routes=FAILOVER_ROUTES,
            )
            stack.callback(node.close)
            views.append(Vantage(node, provider, control))
        for view in views:  # the first runs the migrations and leads
            view.node.start()
        yield views, hook, postgres_url


def _checks(control_port: int) -> dict[str, str]:
    checks = (
        f"[{{type: smtp, every: {EVERY}, timeout: 300ms}}, "
        f"{{type: tcp, name: control, host: 127.0.0.1, port: {control_port}, "
        f"every: {EVERY}, timeout: 300ms}}]"
    )
    return {
        "checks: [{type: smtp, every: 300ms, timeout: 250ms}]": f"checks: {checks}",
        "failure_threshold: 3": "failure_threshold: 2",
    }


def test_split_views_outage_only_when_two_of_three_nodes_see_it(
    split: tuple[list[Vantage], WebhookReceiver, str],
) -> None:
    """Leader down with its control (+ one follower down): no outage; two down, controls up: outage."""
    views, hook, url = split
    lead, _ = until(lambda: leader_row(url)[0] and leader_row(url), 10, "a leader")
    broken = next(v for v in views if v.node.node == lead)
    followers = [v for v in views if v is not broken]

    broken.provider.stop()
    broken.control.stop()
    since = _db_now(url)
    until(lambda: _rounds_down(url, lead, since) >= ROUNDS, 30, f"{ROUNDS} rounds with the split view")
    assert _transitions(url) == [], "one node whose own network fails declared something"
    for view in views:
        assert view.node.provider_state() == "healthy"
    told = "\n".join(followers[0].node.status()["explain"]["why"])
    assert f"node {lead} (leader) sees the provider unknown" in told, told
    assert f"follows: {lead} leads" in told, told

    # one follower sees the provider down with its control up: with the leader's own network
    # failing, that is one vote of the two needed, not two
    followers[0].provider.stop()
    until(lambda: _downs(url, followers[0].node.node, since), 30, "the follower's first down")
    since = _db_now(url)
    until(lambda: _rounds_down(url, lead, since) >= ROUNDS, 30, f"{ROUNDS} more rounds, one vote down")
    assert _transitions(url) == [], "a node whose own network fails made up the quorum"
    assert all(view.node.provider_state() == "healthy" for view in views)

    broken.provider.start()
    broken.control.start()
    since = _db_now(url)  # the leader sees the provider working again before the second vote
    until(lambda: _latest(url, lead, "smtp", since) == "ok", 30, "the leader's provider back")
    followers[1].provider.stop()
    until(lambda: all(v.node.provider_state() == "outage" for v in views), 30, "outage on every node")
    (declared,) = [cause for cause, to in _transitions(url) if to == "outage"]
    assert "2 of 3 nodes see it down (quorum 2)" in declared, declared
    # A follower adopts the stored decision on its next look (a third of the lease): poll for it.
    explain = until(lambda: _followed(followers[0]), 15, "the follower's explain shows the outage")
    smtp = next(c for c in explain["checks"] if c["name"] == "smtp")
    assert smtp["latest"]["status"] == "down" and "2 of 3 nodes see it down" in smtp["latest"]["reason"]

    notification = followers[1].node.send("critical", "split-view outage")
    until(lambda: _subjects(hook) >= {"split-view outage"}, 20, "the critical notice on the backup channel")
    assert followers[1].node.notification(notification)["deliveries"][0]["channel"] == "hook"
    assert broken.provider.messages == [], "the leader's provider worked, but the cluster is in outage"


def _db_now(url: str) -> Any:
    with admin(url) as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]


def _downs(url: str, node: str, since: Any) -> int:
    """The node's smtp DOWN results since ``since``."""
    with admin(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM check_results"
            " WHERE node = %s AND check_name = 'smtp' AND status = 'down' AND at >= %s",
            (node, since),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _latest(url: str, node: str, check: str, since: Any) -> str | None:
    """The status of the node's latest ``check`` result since ``since``, if any."""
    with admin(url) as conn:
        row = conn.execute(
            "SELECT status FROM check_results WHERE node = %s AND check_name = %s AND at >= %s"
            " ORDER BY at DESC, id DESC LIMIT 1",
            (node, check, since),
        ).fetchone()
    return None if row is None else str(row[0])


def _rounds_down(url: str, node: str, since: Any) -> int:
    """The node's own smtp DOWN results since ``since`` (each a round the leader decided), once its
    control has been seen down too."""
    with admin(url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE check_name = 'smtp'),"
            " count(*) FILTER (WHERE check_name = 'control')"
            " FROM check_results WHERE node = %s AND status = 'down' AND at >= %s",
            (node, since),
        ).fetchone()
    assert row is not None
    smtp, control = (int(n) for n in row)  # type: ignore[call-overload]
    return smtp if control else 0


def _transitions(url: str) -> list[tuple[str, str]]:
    with admin(url) as conn:
        found = conn.execute("SELECT cause, to_state FROM provider_events ORDER BY id").fetchall()
    return [(str(cause), str(to)) for cause, to in found]


def _subjects(hook: WebhookReceiver) -> set[str]:
    return {r.json()["subject"] for r in hook.requests}


def _followed(view: Vantage) -> dict[str, Any] | None:
    """The follower's explain once it shows the leader's outage transition, else None."""
    explain: dict[str, Any] = view.node.status()["explain"]
    told = any(line.startswith("the leader's last transition") for line in explain["why"])
    return explain if told and explain["state"] == "outage" else None
