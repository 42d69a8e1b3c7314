"""What the statistics add up: counts of task outcomes and a histogram of
processing times, with the rules to merge them and read percentiles.

A `Tally` is one row of an aggregate (one queue in one hour, or in one
second) in memory; the recorder adds to tallies and flushes them, the reads
sum rows back into tallies. Pure code: no I/O.
"""

from __future__ import annotations

import bisect
import dataclasses
from datetime import UTC, datetime, timedelta

#: Upper bounds (seconds, inclusive) of the processing-time histogram; a last
#: bucket holds everything longer. Stored as arrays in the aggregates, so this
#: list only ever grows at the end.
BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip


def bucket_of(seconds: float) -> int:
    """The histogram bucket a processing time falls in."""
    return bisect.bisect_left(BOUNDS, seconds)


def quantile(buckets: list[int], q: float, max_seen: float) -> float | None:
    """The q-quantile (0 < q <= 1) of the times counted in `buckets`, by linear
    interpolation inside the bucket that holds it (as Prometheus'
    histogram_quantile), never above the longest time seen; None when empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            lower = BOUNDS[i - 1] if i > 0 else 0.0
            upper = BOUNDS[i] if i < len(BOUNDS) else max(max_seen, lower)
            return min(lower + (upper - lower) * (rank - seen) / count, max_seen)
        seen += count
    return max_seen  # pragma: no cover - rank <= total always finds a bucket


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def second_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(microsecond=0)


def minute_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def bucket_start(at: datetime, width: int) -> datetime:
    """The start of the `width`-second bucket (1 or 60) that holds `at`."""
    return second_of(at) if width == 1 else minute_of(at)


def window(now: datetime, seconds: int) -> tuple[int, datetime]:
    """A sliding window of about `seconds` ending now, as (bucket width, first
    bucket): up to 60 s in one-second buckets, longer ones in one-minute
    buckets (rounded up to whole minutes), the current bucket included."""
    width = 1 if seconds <= 60 else 60
    count = -(-seconds // width)
    return width, bucket_start(now, width) - timedelta(seconds=width * (count - 1))


@dataclasses.dataclass(slots=True)
class Tally:
    submitted: int = 0
    succeeded: int = 0
    #: Failed attempts, retried or not.
    failed: int = 0
    dead: int = 0
    cancelled: int = 0
    duration_sum: float = 0.0
    duration_count: int = 0
    duration_max: float = 0.0
    duration_buckets: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(BOUNDS) + 1))

    def took(self, seconds: float) -> None:
        """Count one attempt's processing time."""
        if seconds < 0:
            seconds = 0.0
        self.duration_sum += seconds
        self.duration_count += 1
        if seconds > self.duration_max:
            self.duration_max = seconds
        self.duration_buckets[bisect.bisect_left(BOUNDS, seconds)] += 1

    def add(self, other: Tally) -> None:
        self.submitted += other.submitted
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.dead += other.dead
        self.cancelled += other.cancelled
        self.duration_sum += other.duration_sum
        self.duration_count += other.duration_count
        self.duration_max = max(self.duration_max, other.duration_max)
        size = max(len(self.duration_buckets), len(other.duration_buckets))
        mine = self.duration_buckets + [0] * (size - len(self.duration_buckets))
        for i, count in enumerate(other.duration_buckets):
            mine[i] += count
        self.duration_buckets = mine

    @property
    def counts_outcomes(self) -> bool:
        """Whether it counts anything the sliding windows show (not only submissions)."""
        return bool(self.succeeded or self.failed or self.cancelled)

    @property
    def finished(self) -> int:
        """Tasks that ended SUCCEEDED or DEAD."""
        return self.succeeded + self.dead

    @property
    def attempts(self) -> int:
        """Attempts that succeeded or failed."""
        return self.succeeded + self.failed

    @property
    def error_rate(self) -> float:
        return self.failed / self.attempts if self.attempts else 0.0

    @property
    def average(self) -> float | None:
        return self.duration_sum / self.duration_count if self.duration_count else None

    def percentile(self, q: float) -> float | None:
        return quantile(self.duration_buckets, q, self.duration_max)
