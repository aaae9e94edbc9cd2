"""The metrics' own collectors (:mod:`daemon.metrics`): gauges shown only while the store was read,
and the shared rate-limit buckets' refusals."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric


class WhileRead:
    """A collector: the gauges of ``registry`` while ``shown`` (the last scrape read the store)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.shown = True

    def collect(self) -> Iterator[Metric]:
        if self.shown:
            yield from self.registry.collect()


class Refusals:
    """A collector: each rate-limited token's refusals, as counted in the shared buckets."""

    def __init__(self, refused: Callable[[], Mapping[str, int]]) -> None:
        self._refused = refused

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = self._family()
        for token, count in sorted(self._refused().items()):
            family.add_metric([token], count)
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "backchannel_api_rate_limited",
            "Requests refused with 429: the token was over its rate_limit (API and intake workers' ports)",
            labels=["token"],
        )
