"""`treadle bench --mode submit --submit-rate R --max-queued N` measures what the
limits cost a submit: they are switched on and off between rounds, on the
same replica, in the same run."""

from __future__ import annotations

import asyncio

import pytest
from test_bench import bench, rates_positive


async def test_submit_mode_switches_the_limits_on_and_off_between_rounds(database_url: str) -> None:
    report = await asyncio.to_thread(
        bench,
        database_url,
        "--mode", "submit", "-n", "40", "--rounds", "2",
        "--submit-rate", "100000", "--max-queued", "1000000",
    )  # fmt: skip
    assert report["limits"] == {"submit_rate": 100000.0, "max_queued": 1000000}
    rates_positive(report, "submit_rate", "limited_submit_rate")
    assert len(report["all"]["limited"]) == len(report["all"]["submit"]) == 2
    assert report["limited_cost"] == pytest.approx(
        report["submit_rate"] / report["limited_submit_rate"] - 1, abs=0.002
    )
    assert set(report["peak_rss_mb"]) == {"replica-0"}
