"""The senders choose the ``source`` label: its series are capped, the rest counted as ``other``."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.metrics import MAX_SOURCES, OTHER_SOURCE, Metrics


def _accepted(metrics: Metrics) -> dict[tuple[str, str], float]:
    found = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            if sample.name == "backchannel_notifications_accepted_total":
                found[(sample.labels["severity"], sample.labels["source"])] = sample.value
    return found


def test_sources_past_the_cap_are_counted_as_other() -> None:
    metrics = Metrics()
    for i in range(MAX_SOURCES + 50):
        metrics.accepted_counts({("info", f"app-{i}"): 2}, 0)
    metrics.accepted_counts({("info", "app-0"): 1, ("critical", "app-1"): 1, ("info", "late"): 3}, 0)
    counted = _accepted(metrics)
    assert len({source for _, source in counted} - {OTHER_SOURCE}) == MAX_SOURCES
    assert counted[("info", OTHER_SOURCE)] == 50 * 2 + 3
    assert counted[("info", "app-0")] == 3  # a source seen before the cap keeps its series
    assert counted[("critical", "app-1")] == 1  # in every severity
    assert sum(counted.values()) == (MAX_SOURCES + 50) * 2 + 5  # nothing goes uncounted
