"""An alert firing again with the start time of a firing already resolved, on both backends.

Part of the shared store suite (the ``store`` fixture runs each test on SQLite and PostgreSQL).
Alertmanager resolves an alert whose sender went quiet past ``endsAt``; when the sender reports it
again Prometheus keeps its ``startsAt``, so the new firing has the first one's idempotency key. The
notifications are made by the real Alertmanager mapping, per alert and per group
(daemon/store/episodes.py).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from datetime import timedelta
from typing import Any

from daemon.core.model import FOLLOWS_LABEL, RESOLVES_LABEL, Notification
from daemon.core.routing import plans_for
from daemon.intake.alertmanager import AlertmanagerPayload, submissions
from daemon.intake.webhook_config import AlertmanagerIntakeConfig
from daemon.store.base import Store
from daemon.store.values import Accepted, NewNotification
from tests.integration.conftest import PgFactory
from tests.integration.test_escalation_store import T0, deliver, outage
from tests.integration.test_group_versions_store import GROUP, ROUTES, grown, partly_resolved
from tests.unit.test_alertmanager_mapping import FIRING, resolved

PER_ALERT = AlertmanagerIntakeConfig()
_ids = itertools.count()


def made(data: dict[str, Any], config: AlertmanagerIntakeConfig = GROUP) -> list[NewNotification]:
    """The notifications the intake makes of this webhook call."""
    out = []
    for sub in submissions(AlertmanagerPayload.model_validate_json(json.dumps(data)), config):
        assert sub.idempotency_key is not None
        n = Notification(
            f"01JEPISODE{next(_ids):016d}", sub.idempotency_key, T0, sub.severity, sub.subject,
            sub.body, source=sub.source, labels=sub.labels,
        )  # fmt: skip
        out.append(NewNotification(n, plans_for(n, ROUTES)))
    return out


def one_alert(data: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    out["alerts"] = out["alerts"][:1]
    return out


async def accept(
    store: Store, data: dict[str, Any], minutes: int, config: AlertmanagerIntakeConfig = GROUP
) -> Accepted:
    (answer,) = await store.accept(made(data, config), T0 + timedelta(minutes=minutes))
    return answer


async def key_and_labels(store: Store, notification_id: str) -> tuple[str, dict[str, str]]:
    view = await store.notification(notification_id)
    assert view is not None
    return view.notification.idempotency_key, dict(view.notification.labels)


async def test_an_alert_firing_again_after_its_resolution_is_a_new_notification(store: Store) -> None:
    """Per alert: fired, resolved, fired again under the same key: the third call is a new
    notification (``~2``), its re-sends repeat it, and its own resolution closes it."""
    await outage(store)
    alert = one_alert(FIRING)
    first = await accept(store, alert, 0, PER_ALERT)
    end = await accept(store, resolved(alert), 5, PER_ALERT)
    again = await accept(store, alert, 10, PER_ALERT)
    assert not again.duplicate and again.id not in (first.id, end.id)
    first_key, _ = await key_and_labels(store, first.id)
    assert (await key_and_labels(store, again.id))[0] == f"{first_key}~2"
    # Alertmanager's re-sends of the second firing, and of the first resolution, are repeats
    assert await accept(store, alert, 11, PER_ALERT) == Accepted(again.id, duplicate=True)
    # it pages like the first did (the first resolution is told too)
    assert again.id in await deliver(store, "slack", T0 + timedelta(minutes=10))

    second_end = await accept(store, resolved(alert), 15, PER_ALERT)
    assert not second_end.duplicate
    key, labels = await key_and_labels(store, second_end.id)
    assert key.endswith(":resolved~2")
    assert labels[RESOLVES_LABEL] == labels[FOLLOWS_LABEL] == f"{first_key}~2"
    view = await store.notification(again.id)
    assert view is not None
    assert [a.detail for a in view.attempts if a.outcome == "acknowledged"] == [
        "acknowledged by alertmanager via resolution"
    ]
    # and its re-send is a repeat of it, not of the first resolution
    assert (await accept(store, resolved(alert), 16, PER_ALERT)).id == second_end.id

    # a third episode: ~3
    third = await accept(store, alert, 20, PER_ALERT)
    assert not third.duplicate
    assert (await key_and_labels(store, third.id))[0] == f"{first_key}~3"


async def test_an_open_firing_resent_is_still_a_repeat(store: Store) -> None:
    """Not resolved (only acknowledged by a person, or not at all): a re-send is a duplicate."""
    alert = one_alert(FIRING)
    first = await accept(store, alert, 0, PER_ALERT)
    assert await store.acknowledge(first.id, "alice", "api", T0 + timedelta(minutes=1)) is not None
    assert (await accept(store, alert, 5, PER_ALERT)).id == first.id
    assert (await accept(store, alert, 6, PER_ALERT)).duplicate


async def test_a_group_firing_again_after_it_resolved_is_a_new_version(store: Store) -> None:
    """Per group: the group fired, resolved, and fired again with the same alerts and start times:
    a new firing version that pages, and the second resolution closes that one."""
    await outage(store)
    first = await accept(store, FIRING, 0)
    end = await accept(store, resolved(FIRING), 5)
    again = await accept(store, FIRING, 10)
    assert not again.duplicate and again.id not in (first.id, end.id)
    assert (await accept(store, FIRING, 11)).id == again.id
    assert again.id in await deliver(store, "slack", T0 + timedelta(minutes=10))
    second_end = await accept(store, resolved(FIRING), 15)
    assert not second_end.duplicate
    _, labels = await key_and_labels(store, second_end.id)
    again_key, _ = await key_and_labels(store, again.id)
    assert labels[RESOLVES_LABEL] == labels[FOLLOWS_LABEL] == again_key


async def test_a_group_version_from_before_its_resolution_fires_again(store: Store) -> None:
    """The group grew ([A, B], then [A, B, C]) and resolved as a whole; the next episode fires
    [A, B] first and then [A, B, C] again: both versions are new, neither a repeat of the old one."""
    big = grown(FIRING)
    await accept(store, FIRING, 0)
    old_big = await accept(store, big, 1)
    await accept(store, resolved(big), 5)
    small_again = await accept(store, FIRING, 10)
    big_again = await accept(store, big, 11)
    assert not small_again.duplicate and not big_again.duplicate
    assert big_again.id != old_big.id
    # a re-send of the grown group within this episode repeats it
    assert (await accept(store, big, 12)).id == big_again.id


async def test_a_group_update_is_not_an_end(store: Store) -> None:
    """[A, B] then [A, B, C]: a re-send of [A, B] after the group grew is still a repeat (the
    group's later version is a firing, not a resolution)."""
    first = await accept(store, FIRING, 0)
    await accept(store, grown(FIRING), 1)
    assert (await accept(store, FIRING, 2)).id == first.id


async def test_an_alert_first_heard_of_by_its_resolution_is_told_once_and_closed(store: Store) -> None:
    """Per alert: the resolution of a firing never stored (lost, or fired before backchannel
    listened), then the alert fires with that start time: its re-sends repeat it (no second page)
    and its resolution closes it, not a repeat of the resolution stored before it."""
    await outage(store)
    alert = one_alert(FIRING)
    await accept(store, resolved(alert), 0, PER_ALERT)
    firing = await accept(store, alert, 5, PER_ALERT)
    assert not firing.duplicate
    assert await accept(store, alert, 6, PER_ALERT) == Accepted(firing.id, duplicate=True)
    end = await accept(store, resolved(alert), 7, PER_ALERT)
    assert not end.duplicate
    firing_key, _ = await key_and_labels(store, firing.id)
    _, labels = await key_and_labels(store, end.id)
    assert labels[RESOLVES_LABEL] == labels[FOLLOWS_LABEL] == firing_key
    assert await deliver(store, "sms", T0 + timedelta(hours=1)) == []  # its escalation stopped


async def test_a_group_whose_last_version_was_a_repeat_resolves_in_each_episode(store: Store) -> None:
    """Per group: [A, B] fired, B resolved, Alertmanager re-sent [A] alone (a repeat of the version
    before: not stored), then resolved it; A fires again with its start time and resolves again:
    that resolution is told and closes the second firing, not answered as the first resolution."""
    await outage(store)
    alone = one_alert(FIRING)
    await accept(store, FIRING, 0)
    await accept(store, partly_resolved(FIRING), 1)
    assert (await accept(store, alone, 2)).duplicate
    await accept(store, resolved(alone), 3)
    again = await accept(store, alone, 10)
    assert not again.duplicate
    assert await accept(store, alone, 11) == Accepted(again.id, duplicate=True)
    end = await accept(store, resolved(alone), 12)
    assert not end.duplicate
    again_key, _ = await key_and_labels(store, again.id)
    assert (await key_and_labels(store, end.id))[1][FOLLOWS_LABEL] == again_key
    assert await deliver(store, "sms", T0 + timedelta(hours=1)) == []  # no version still escalates


async def test_a_firing_again_sent_twice_at_once_is_one_notification(store: Store) -> None:
    """The firing again in two concurrent calls (batched into one transaction): one new episode,
    the other call its repeat."""
    alert = one_alert(FIRING)
    await accept(store, alert, 0, PER_ALERT)
    await accept(store, resolved(alert), 5, PER_ALERT)
    one, two = await asyncio.gather(*(accept(store, alert, 10, PER_ALERT) for _ in range(2)))
    assert one.id == two.id and [one.duplicate, two.duplicate].count(True) == 1


async def test_two_nodes_told_of_a_firing_again_store_one_episode(pg_nodes: PgFactory) -> None:
    """PostgreSQL, two nodes at once (each an Alertmanager of a cluster): the second insert of the
    new episode's key finds the first's and answers it as a repeat."""
    first, second = await pg_nodes("a"), await pg_nodes("b")
    alert = one_alert(FIRING)
    await accept(first, alert, 0, PER_ALERT)
    await accept(first, resolved(alert), 5, PER_ALERT)
    one, two = await asyncio.gather(accept(first, alert, 10, PER_ALERT), accept(second, alert, 10, PER_ALERT))
    assert one.id == two.id and [one.duplicate, two.duplicate].count(True) == 1
