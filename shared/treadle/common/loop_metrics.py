"""Counters and histograms for hot paths that run on one event loop.

prometheus_client's metrics take a lock on every update and look their label
values up on every `labels()` call: about 6 µs per update on our machines,
which adds up to tens of microseconds per task. The series here are plain
numbers updated without locks, for code that updates them on one event loop
and exposes them from the same loop (`exposition.MetricsServer` serves on the
loop), through a collector registered in the component's registry:

    series = LoopSeries()
    started = series.counter("treadle_tasks_started_total", "...", ("queue", "task"))
    registry.register(series)                        # once every family is made
    started.labels("default", "echo").inc()          # about 0.5 µs
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        #: One count per bucket (not cumulative), the last for +Inf.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class _Family:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)


class Counter(_Family):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames)
        self.children: dict[tuple[str, ...], CounterChild] = {}
        if not self.labelnames:
            self.labels()  # a family without labels shows 0 from the start

    def labels(self, *values: str) -> CounterChild:
        child = self.children.get(values)
        if child is None:
            assert len(values) == len(self.labelnames), (self.name, values)
            child = self.children[values] = CounterChild()
        return child

    def inc(self, amount: float = 1.0) -> None:
        """For a family without labels."""
        self.children[()].value += amount

    def metric(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in sorted(self.children.items()):
            family.add_metric(list(values), child.value)
        return family


class Histogram(_Family):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._le = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self.children: dict[tuple[str, ...], HistogramChild] = {}
        if not self.labelnames:
            self.labels()

    def labels(self, *values: str) -> HistogramChild:
        child = self.children.get(values)
        if child is None:
            assert len(values) == len(self.labelnames), (self.name, values)
            child = self.children[values] = HistogramChild(self.bounds)
        return child

    def observe(self, amount: float) -> None:
        """For a family without labels."""
        self.children[()].observe(amount)

    def metric(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in sorted(self.children.items()):
            cumulative, buckets = 0, []
            for le, count in zip(self._le, child.counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(list(values), buckets, child.sum)
        return family


class LoopSeries(Collector):
    """The families made by `counter` and `histogram`; register it in a
    registry once they are all made (the registry checks their names then)."""

    def __init__(self) -> None:
        self._families: list[Counter | Histogram] = []

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        family = Counter(name, documentation, labelnames)
        self._families.append(family)
        return family

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
    ) -> Histogram:
        family = Histogram(name, documentation, labelnames, buckets)
        self._families.append(family)
        return family

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.metric()
