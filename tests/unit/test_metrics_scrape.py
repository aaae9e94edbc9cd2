"""A scrape while the store cannot be read: the process's own metrics, the store down, and none
of the gauges read from the store (they come back with the next scrape that reads it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from daemon.core.model import ProviderState
from daemon.metrics import Metrics, StoreRead
from daemon.store.values import ChannelHealth, QueueView

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
FROM_STORE = {
    "backchannel_queue_notifications",
    "backchannel_queue_deliveries",
    "backchannel_oldest_pending_age_seconds",
    "backchannel_channel_consecutive_failures",
    "backchannel_channel_last_success_timestamp_seconds",
    "backchannel_drill_success",
    "backchannel_drill_timestamp_seconds",
}


def _families(text: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    families = text_string_to_metric_families(text.decode())
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in families}


def _read() -> StoreRead:
    queue = QueueView({"pending": 3}, {"pending": 2}, NOW - timedelta(seconds=90))
    return StoreRead(queue, [ChannelHealth("slack", NOW, None, None, 0)])


def test_a_scrape_that_cannot_read_the_store_leaves_its_gauges_out_and_says_the_store_is_down() -> None:
    metrics = Metrics()
    metrics.attempts.labels("slack", "critical", "delivered").inc()
    read = _families(metrics.render(ProviderState.OUTAGE, NOW, _read(), up=True))
    assert read["backchannel_store_up"] == [({}, 1.0)]
    assert read["backchannel_oldest_pending_age_seconds"] == [({}, 90.0)]
    assert FROM_STORE - {"backchannel_drill_success"} <= set(read)

    unread = _families(metrics.render(ProviderState.OUTAGE, NOW, None, up=True))
    assert unread["backchannel_store_up"] == [({}, 0.0)]
    assert not FROM_STORE & set(unread)
    assert ({"state": "outage"}, 1.0) in unread["backchannel_provider_state"]
    assert set(read) - FROM_STORE == set(unread)  # everything else as before

    again = _families(metrics.render(ProviderState.OUTAGE, NOW, _read(), up=True))
    assert again["backchannel_store_up"] == [({}, 1.0)]
    assert set(again) == set(read)


def test_a_store_that_can_be_read_but_not_commit_is_down_with_its_gauges() -> None:
    """A full disk: the queue can still be read, and the store is down."""
    scraped = _families(Metrics().render(ProviderState.HEALTHY, NOW, _read(), up=False))
    assert scraped["backchannel_store_up"] == [({}, 0.0)]
    assert scraped["backchannel_queue_notifications"]


def test_only_a_node_sharing_its_store_reports_whether_it_leads() -> None:
    """On SQLite every daemon decides alone: no backchannel_leader (two of them scraped by one
    Prometheus would read as two leaders). On PostgreSQL 1 on the leader, 0 on the others."""
    alone = _families(Metrics().render(ProviderState.HEALTHY, NOW, _read(), up=True))
    assert "backchannel_leader" not in alone
    shared = Metrics()
    shared.watch_leadership()
    leading = _families(shared.render(ProviderState.HEALTHY, NOW, _read(), up=True, leading=True))
    following = _families(shared.render(ProviderState.HEALTHY, NOW, _read(), up=True, leading=False))
    assert (leading["backchannel_leader"], following["backchannel_leader"]) == ([({}, 1.0)], [({}, 0.0)])
