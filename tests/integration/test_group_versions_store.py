"""A new version of an alert group closes the group's older versions, on both backends.

Part of the shared store suite (the ``store`` fixture runs each test on SQLite and PostgreSQL).
The notifications are made by the real Alertmanager mapping in group mode (``per: group``), whose
versions share a lineage (the ``supersedes`` label, from ``groupKey``).
"""

from __future__ import annotations

import copy
import itertools
import json
from datetime import timedelta
from typing import Any

import pytest

from daemon.core.model import Notification, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.intake.alertmanager import AlertmanagerPayload, submissions
from daemon.intake.webhook_config import AlertmanagerIntakeConfig
from daemon.store import codec
from daemon.store.base import Store
from daemon.store.values import Accepted, NewNotification, NotificationView
from tests.integration.test_escalation_store import LADDER, T0, deliver, outage
from tests.unit.test_alertmanager_mapping import FIRING, resolved

ROUTES = (
    Route("page", Matcher(severities=frozenset({Severity.CRITICAL})), ("email",), LADDER),
    Route("hold", Matcher(), ("email",), None),
)
GROUP = AlertmanagerIntakeConfig(per="group")
_ids = itertools.count()


def version(data: dict[str, Any]) -> NewNotification:
    """The group notification the intake makes of this webhook call."""
    (sub,) = submissions(AlertmanagerPayload.model_validate_json(json.dumps(data)), GROUP)
    assert sub.idempotency_key is not None
    n = Notification(
        f"01JGROUP{next(_ids):018d}", sub.idempotency_key, T0, sub.severity, sub.subject,
        sub.body, source=sub.source, labels=sub.labels,
    )  # fmt: skip
    return NewNotification(n, plans_for(n, ROUTES))


def partly_resolved(data: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    out["alerts"][1]["status"] = "resolved"
    out["alerts"][1]["endsAt"] = "2024-02-06T14:00:00Z"
    return out


def grown(data: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    out["alerts"].append({**data["alerts"][1], "fingerprint": "3c52dc93eec4b431"})
    return out


def other_group(data: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    out["groupKey"] = '{}/{severity="critical"}:{alertname="DiskFull"}'
    return out


async def next_weeks_firing(store: Store) -> NotificationView:
    """The same group firing again a week later, as the store committed it."""
    next_week = copy.deepcopy(FIRING)
    for alert in next_week["alerts"]:
        alert["startsAt"] = "2024-02-13T12:00:00Z"
    (again,) = await store.accept([version(next_week)], T0 + timedelta(days=7))
    view = await store.notification(again.id)
    assert view is not None
    return view


async def status(store: Store, notification_id: str) -> str:
    view = await store.notification(notification_id)
    assert view is not None
    return view.status


async def closed_by(store: Store, notification_id: str) -> list[str]:
    view = await store.notification(notification_id)
    assert view is not None
    return [a.detail for a in view.attempts if a.outcome == "acknowledged"]


async def test_a_group_that_changes_stops_the_older_versions_escalation(store: Store) -> None:
    """Paged on Slack; an alert joined before the SMS step: the grown group pages from its first
    step, the first version's SMS never goes (it told of a group that no longer is)."""
    await outage(store)
    (first,) = await store.accept([version(FIRING)], T0)
    assert await deliver(store, "slack", T0) == [first.id]
    (second,) = await store.accept([version(grown(FIRING))], T0 + timedelta(minutes=1))
    assert not second.duplicate
    assert await deliver(store, "slack", T0 + timedelta(minutes=1)) == [second.id]
    assert await deliver(store, "sms", T0 + timedelta(minutes=5)) == []
    assert await deliver(store, "sms", T0 + timedelta(minutes=6)) == [second.id]
    assert await closed_by(store, first.id) == ["acknowledged by alertmanager via group update"]


async def test_a_partly_resolved_group_is_told_and_its_resolution_closes_every_version(store: Store) -> None:
    """firing → one alert resolved → all resolved: the update is not a duplicate (it was, and was
    lost), and the final resolution stops whichever version is still escalating."""
    await outage(store)
    (first,) = await store.accept([version(FIRING)], T0)
    assert await deliver(store, "slack", T0) == [first.id]
    (update,) = await store.accept([version(partly_resolved(FIRING))], T0 + timedelta(minutes=1))
    assert not update.duplicate
    assert await deliver(store, "slack", T0 + timedelta(minutes=1)) == [update.id]
    (done,) = await store.accept([version(resolved(FIRING))], T0 + timedelta(minutes=2))
    assert await deliver(store, "slack", T0 + timedelta(minutes=2)) == [done.id]
    for channel in ("sms", "sms2", "ops"):  # neither version's later steps, nor the resolution's
        assert await deliver(store, channel, T0 + timedelta(hours=1)) == []
    assert await closed_by(store, update.id) == ["acknowledged by alertmanager via group update"]


async def test_a_held_group_and_its_updates_leave_only_the_latest_to_send(store: Store) -> None:
    """Warnings held through an outage: each version closes the one before, so after recovery
    only the last state of the group is sent, not every state it went through."""
    warning = copy.deepcopy(FIRING)
    for alert in warning["alerts"]:
        alert["labels"]["severity"] = "warning"
    await outage(store)
    accepted = [(await store.accept([version(v)], T0))[0] for v in (warning, partly_resolved(warning))]
    assert [await status(store, a.id) for a in accepted] == ["acknowledged", "held"]


async def test_a_repeated_version_closes_nothing(store: Store) -> None:
    """Alertmanager re-sends the group unchanged on every repeat_interval: a duplicate, which
    neither closes the version it repeats nor any other."""
    (first,) = await store.accept([version(FIRING)], T0)
    (again,) = await store.accept([version(FIRING)], T0 + timedelta(hours=4))
    assert (again.id, again.duplicate) == (first.id, True)
    assert await status(store, first.id) == "pending"


async def test_other_groups_are_left_alone(store: Store) -> None:
    (one,) = await store.accept([version(FIRING)], T0)
    (two,) = await store.accept([version(other_group(grown(FIRING)))], T0)
    assert (await status(store, one.id), await status(store, two.id)) == ("pending", "pending")


async def test_versions_committed_together_leave_one_open(store: Store) -> None:
    """Two versions in one transaction (two calls batched by the writer; PostgreSQL orders a
    transaction's inserts by key): one closes the other, never both left open."""
    accepted = await store.accept([version(FIRING), version(grown(FIRING))], T0)
    assert sorted([await status(store, a.id) for a in accepted]) == ["acknowledged", "pending"]


async def test_the_groups_resolution_threads_under_its_latest_version(store: Store) -> None:
    """As Alertmanager sends it: after one alert resolved it leaves the group, so the final
    resolution names only the other; the version that fired with exactly that alert never
    existed. The resolution follows the group's latest version, where the group was last told."""
    await store.accept([version(FIRING)], T0)
    update = version(partly_resolved(FIRING))
    await store.accept([update], T0 + timedelta(minutes=1))
    last = copy.deepcopy(FIRING)
    del last["alerts"][1]
    (done,) = await store.accept([version(resolved(last))], T0 + timedelta(minutes=2))
    view = await store.notification(done.id)
    assert view is not None
    assert view.notification.labels["follows"] == update.notification.idempotency_key


async def test_a_firing_version_threads_nowhere(store: Store) -> None:
    """A changed group that still fires is news, not a reply: it is posted as a message of its own."""
    await store.accept([version(FIRING)], T0)
    (grown_one,) = await store.accept([version(grown(FIRING))], T0)
    view = await store.notification(grown_one.id)
    assert view is not None
    assert "follows" not in view.notification.labels


async def test_a_group_someone_took_on_does_not_page_again_when_it_changes(store: Store) -> None:
    """Alice acknowledged the group on Slack; one alert resolves, then another joins: each new
    version is told (once, on the first channel that takes it) and names who has it, and none
    pages her again, as the group is hers until it resolves."""
    await outage(store)
    (first,) = await store.accept([version(FIRING)], T0)
    assert await deliver(store, "slack", T0) == [first.id]
    assert await store.acknowledge(first.id, "alice", "slack", T0 + timedelta(minutes=1)) == "acknowledged"
    later = T0 + timedelta(minutes=2)
    update, joined = version(partly_resolved(FIRING)), version(grown(partly_resolved(FIRING)))
    for new in (update, joined):
        await store.accept([new], later)
        view = await store.notification(new.notification.id)
        assert view is not None
        assert view.notification.labels["group_acknowledged"] == "alice via slack"
        assert view.plan == ("slack", "sms", "sms2", "ops")  # a failover list, not steps on a timer
        assert await deliver(store, "slack", later) == [new.notification.id]
    for channel in ("sms", "sms2", "ops"):
        assert await deliver(store, channel, T0 + timedelta(hours=1)) == []


async def test_after_the_group_resolved_its_next_firing_pages_again(store: Store) -> None:
    """The acknowledgement lasts until the group resolves: the same group firing next week is news."""
    await outage(store)
    (first,) = await store.accept([version(FIRING)], T0)
    await store.acknowledge(first.id, "alice", "slack", T0)
    await store.accept([version(resolved(FIRING))], T0 + timedelta(minutes=1))
    view = await next_weeks_firing(store)
    assert "group_acknowledged" not in view.notification.labels
    assert view.status == "pending" and view.plan == ("slack", "sms", "sms2", "ops")
    assert await deliver(store, "sms", T0 + timedelta(days=7, minutes=6)) == [
        view.notification.id
    ]  # it escalates


async def test_a_resolution_acknowledged_by_an_admin_does_not_silence_the_next_firing(store: Store) -> None:
    """An admin closes the group's resolution by the API while its email is retried: the group
    resolved all the same, so its firing next week pages."""
    await outage(store)
    await store.accept([version(FIRING)], T0)
    (done,) = await store.accept([version(resolved(FIRING))], T0 + timedelta(minutes=1))
    assert await store.acknowledge(done.id, "admin", "api", T0 + timedelta(minutes=2)) == "acknowledged"
    view = await next_weeks_firing(store)
    assert "group_acknowledged" not in view.notification.labels
    assert view.plan == ("slack", "sms", "sms2", "ops")


async def test_acknowledging_the_version_one_was_paged_for_takes_on_the_group(store: Store) -> None:
    """Paged for the first version on Slack, an alert joins (the grown group pages again on Slack),
    then Alice presses Acknowledge on the first message: the group is hers, the grown version's
    SMS never goes (she was answered 'already', and paged again)."""
    await outage(store)
    (first,) = await store.accept([version(FIRING)], T0)
    assert await deliver(store, "slack", T0) == [first.id]
    (grew,) = await store.accept([version(grown(FIRING))], T0 + timedelta(minutes=1))
    assert await deliver(store, "slack", T0 + timedelta(minutes=1)) == [grew.id]
    assert await store.acknowledge(first.id, "alice", "slack", T0 + timedelta(minutes=2)) == "acknowledged"
    assert await deliver(store, "sms", T0 + timedelta(minutes=7)) == []
    assert await closed_by(store, grew.id) == ["acknowledged by alice via slack"]
    assert await closed_by(store, first.id) == ["acknowledged by alertmanager via group update"]
    # once is enough: pressing again is 'already', as for any acknowledged notification
    assert await store.acknowledge(first.id, "bob", "slack", T0 + timedelta(minutes=3)) == "already"


async def test_an_old_button_does_not_take_on_the_groups_next_incident(store: Store) -> None:
    """Last week's first version (closed by a newer one, then the group resolved): pressing its
    Slack button now is 'already', and this week's incident goes on paging."""
    await outage(store)
    (first,) = await store.accept([version(FIRING)], T0)
    assert await deliver(store, "slack", T0) == [first.id]
    await store.accept([version(grown(FIRING))], T0 + timedelta(minutes=1))
    await store.accept([version(resolved(grown(FIRING)))], T0 + timedelta(minutes=2))
    again = await next_weeks_firing(store)
    assert await store.acknowledge(first.id, "alice", "slack", T0 + timedelta(days=7, minutes=1)) == "already"
    assert await closed_by(store, again.notification.id) == []


def dropped(data: dict[str, Any]) -> dict[str, Any]:
    """What Alertmanager sends at the next repeat_interval once it told of the resolved alert: the
    firing ones alone."""
    out = partly_resolved(data)
    out["alerts"] = [a for a in out["alerts"] if a["status"] == "firing"]
    return out


async def test_the_repeat_after_a_partial_resolution_is_a_duplicate(store: Store) -> None:
    """[A, B] then [A, B resolved] (told: B resolved) then [A] at the next repeat_interval, again and
    again: nothing new fires, so nothing is sent or paged again; a new alert joining is news."""
    first, update = version(FIRING), version(partly_resolved(FIRING))
    (told,) = await store.accept([first], T0)
    (news,) = await store.accept([update], T0 + timedelta(minutes=5))
    repeats = [await store.accept([version(dropped(FIRING))], T0 + timedelta(hours=h)) for h in (4, 8)]
    assert [r for (r,) in repeats] == [Accepted(id=news.id, duplicate=True)] * 2
    assert (told.duplicate, news.duplicate) == (False, False)
    joined = copy.deepcopy(dropped(FIRING))
    joined["alerts"].append({**FIRING["alerts"][1], "fingerprint": "3c52dc93eec4b431"})
    (more,) = await store.accept([version(joined)], T0 + timedelta(hours=9))
    assert not more.duplicate
    assert await closed_by(store, news.id) == ["acknowledged by alertmanager via group update"]


async def test_an_sms_reply_with_the_code_of_the_version_one_was_paged_for_takes_on_the_group(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Texted the first version's code, an alert joins (the grown group pages again under its own
    code), then Bob replies with the code he was texted: it finds that version, the group is his."""
    draws = iter(["AAAAAA", "BBBBBB"])
    monkeypatch.setattr(codec, "random_ack_code", lambda: next(draws))
    await outage(store)
    (first,) = await store.accept([version(FIRING)], T0)
    (grew,) = await store.accept([version(grown(FIRING))], T0 + timedelta(minutes=1))
    assert await store.by_ack_code("aaaaaa") == first.id
    assert (
        await store.acknowledge(first.id, "+15550100001", "sms", T0 + timedelta(minutes=2)) == "acknowledged"
    )
    assert await deliver(store, "sms", T0 + timedelta(minutes=7)) == []
    assert await closed_by(store, grew.id) == ["acknowledged by +15550100001 via sms"]
