"""The pure rules of the statistics: histogram percentiles, windows, merging."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from treadle.scheduler.tally import BOUNDS, Tally, bucket_of, quantile, window


def test_bucket_bounds_are_inclusive_and_the_last_bucket_overflows() -> None:
    assert bucket_of(0) == 0
    assert bucket_of(0.005) == 0
    assert bucket_of(0.0051) == 1
    assert bucket_of(3600) == len(BOUNDS) - 1
    assert bucket_of(3601) == len(BOUNDS)


def test_quantile_interpolates_inside_its_bucket_and_never_passes_the_max() -> None:
    buckets = [0] * (len(BOUNDS) + 1)
    assert quantile(buckets, 0.95, 0.0) is None
    buckets[4] = 100  # 100 times in (0.05, 0.1]
    assert quantile(buckets, 0.95, 0.1) == pytest.approx(0.05 + 0.05 * 0.95)
    assert quantile(buckets, 0.95, 0.06) == 0.06, "capped at the longest time seen"
    buckets[len(BOUNDS)] = 100  # and 100 over an hour
    assert quantile(buckets, 0.95, 5000.0) == pytest.approx(3600 + 1400 * 0.9)
    assert quantile(buckets, 0.5, 5000.0) == pytest.approx(0.1)


def test_tally_merges_counts_and_histograms() -> None:
    one, two = Tally(), Tally()
    one.took(0.2)
    one.succeeded += 1
    two.took(2.0)
    two.failed += 1
    two.dead += 1
    one.add(two)
    assert (one.succeeded, one.failed, one.dead, one.finished, one.attempts) == (1, 1, 1, 2, 2)
    assert one.error_rate == 0.5
    assert one.average == pytest.approx(1.1)
    assert one.duration_max == 2.0
    assert sum(one.duration_buckets) == 2
    assert Tally().average is None and Tally().error_rate == 0.0


def test_windows_use_seconds_up_to_a_minute_then_minutes() -> None:
    now = datetime(2025, 3, 1, 12, 30, 15, 500_000, tzinfo=UTC)
    assert window(now, 60) == (1, datetime(2025, 3, 1, 12, 29, 16, tzinfo=UTC))
    assert window(now, 3600) == (60, datetime(2025, 3, 1, 11, 31, tzinfo=UTC))
    assert window(now, 300) == (60, datetime(2025, 3, 1, 12, 26, tzinfo=UTC))
    assert window(now, 90) == (60, datetime(2025, 3, 1, 12, 29, tzinfo=UTC))
