"""`treadle bench --mode …` runs end to end, small: each mode starts its own
Treadle processes on a fresh schema of the test database, measures, reports
sane figures as JSON, and leaves nothing behind. Speed itself is measured by
running the bench (docs/benchmarks.md), never asserted here."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

TREADLE = [sys.executable, "-m", "treadle.cli", "bench", "--json"]


def bench(database_url: str, *args: str, timeout: float = 50) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env["TREADLE_DATABASE_URL"] = database_url
    done = subprocess.run(
        [*TREADLE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


async def bench_schemas(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'")
        return {r["nspname"] for r in rows}
    finally:
        await conn.close()


def rates_positive(report: dict[str, Any], *keys: str) -> None:
    for key in keys:
        assert report[key] > 0, (key, report)


async def test_submit_mode_compares_with_a_baseline_in_the_same_run(database_url: str) -> None:
    before = await bench_schemas(database_url)
    report = await asyncio.to_thread(
        bench, database_url, "--mode", "submit", "--in-flight", "4", "-n", "40"
    )
    assert report["mode"] == "submit" and report["in_flight"] == 4
    rates_positive(report, "submit_rate", "baseline_rate", "grpc_floor_rate")
    assert report["ratio_to_baseline"] == pytest.approx(
        report["submit_rate"] / report["baseline_rate"], rel=0.01, abs=0.001
    )
    # CPU time per call: the bench client's (its own clock), and the
    # replica's (/proc, in clock ticks of 10 ms: 40 calls may take none).
    rates_positive(report, "client_cpu_us_per_submit", "client_cpu_us_per_floor_call")
    assert report["replica_cpu_us_per_submit"] >= 0
    assert report["replica_cpu_us_per_floor_call"] >= 0
    assert len(report["all"]["submit"]) == report["rounds"] == 3
    assert report["peak_rss_mb"]["replica-0"] > 0
    assert await bench_schemas(database_url) == before  # its schema is dropped


async def test_submit_mode_with_auth_measures_a_replica_requiring_keys(database_url: str) -> None:
    report = await asyncio.to_thread(
        bench, database_url, "--mode", "submit", "--in-flight", "2", "-n", "20", "--auth"
    )
    rates_positive(report, "submit_rate", "submit_auth_rate")
    assert len(report["all"]["submit_auth"]) == 3
    assert report["auth_cost_per_submit"] == pytest.approx(
        report["submit_rate"] / report["submit_auth_rate"] - 1, abs=0.002
    )
    assert set(report["peak_rss_mb"]) == {"replica-0", "replica-1"}


async def test_drain_mode_starts_replicas_and_every_task_succeeds(database_url: str) -> None:
    report = await asyncio.to_thread(
        bench,
        database_url,
        "--mode",
        "drain",
        "-n",
        "200",
        "--replicas",
        "2",
        "--finished-rows",
        "500",
    )
    assert report["states"] == {"SUCCEEDED": 200}
    rates_positive(report, "rate_with_startup", "rate_steady", "first_claim_after_exec_s")
    assert report["rate_steady"] >= report["rate_with_startup"]
    assert set(report["peak_rss_mb"]) == {"replica-0", "replica-1"}


async def test_latency_and_startup_modes_report_percentiles(database_url: str) -> None:
    latency = await asyncio.to_thread(
        bench, database_url, "--mode", "latency", "--rate", "50", "--seconds", "0.4"
    )
    assert latency["tasks"] == 20
    spread = latency["submit_to_start_ms"]
    assert 0 <= spread["p50"] <= spread["p99"] <= spread["p100"]

    startup = await asyncio.to_thread(bench, database_url, "--mode", "startup", "--runs", "2")
    assert len(startup["runs"]) == 2
    for run in startup["runs"]:
        assert 0 < run["serving_ms"] <= run["ready_ms"] and 0 < run["claim_ms"] <= run["ready_ms"]
    assert startup["median"]["ready_ms"] > 0


async def test_a_mode_that_starts_its_own_treadle_refuses_an_address() -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [*TREADLE, "--mode", "submit", "--address", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "starts its own Treadle" in done.stderr


@pytest.mark.parametrize("query", ["task", "submit"])
async def test_graphql_mode_loads_a_gateway_of_its_own(database_url: str, query: str) -> None:
    report = await asyncio.to_thread(
        bench,
        database_url,
        "--mode",
        "graphql",
        "--query",
        query,
        "--connections",
        "4",
        "--seconds",
        "0.5",
        "--rounds",
        "1",
    )
    rates_positive(report, "health_rate", "graphql_rate")
    assert report["generator"] in ("wrk", "python")
    assert report["ratio_to_health"] == pytest.approx(
        report["graphql_rate"] / report["health_rate"], rel=0.01, abs=0.001
    )
    rates_positive(report, "typename_rate")
    assert report["typename_ratio_to_health"] == pytest.approx(
        report["typename_rate"] / report["health_rate"], rel=0.01, abs=0.001
    )
    # The gateway's CPU per request of each load, read from /proc.
    cpu = report["gateway_cpu_us_per_request"]
    assert set(cpu) == {"health", "graphql", "typename"}
    assert all(value > 0 for value in cpu.values()), cpu
    assert set(report["peak_rss_mb"]) == {"replica-0", "gateway-1"}
