"""The claim statements alone, side by side on one table.

A fresh schema holds N ready tasks over four queues; each round runs every
variant once, alternating, each claim of 100 in a transaction rolled back, so
every variant sees the same table. `--before FILE` adds the `claim` of
another tree's queries.sql (bound without the names it did not take; only
meaningful when that tree's migrations make the same indexes). `--keyed K`
adds K ready tasks with a concurrency key ahead of them (higher priority),
which the plain claims must not read, and a `claim_keyed` variant.

    .venv/bin/python scripts/claim_bench.py [--url URL] [-n 20000] [--rounds 300]
        [--before /tmp/treadle-before/services/scheduler/treadle/scheduler/sql/queries.sql]
        [--keyed 20000]

Speed is measured here, never asserted; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from treadle.common.queries import parse_queries
from treadle.scheduler import postgres

#: The names the test app registers: what a replica of it claims by.
NAMES = ["echo", "square", "boom", "sync_boom", "sleep", "noop", "flaky", "record", "permanent"]
QUEUES = ["q0", "q1", "q2", "q3"]


async def bench(url: str, count: int, rounds: int, before: str | None, keyed: int = 0) -> None:
    variants: dict[str, tuple[str, list[Any]]] = {}
    if before is not None:
        variants["before: claim"] = (parse_queries(before)["claim"].sql, [100, "bench", 30.0])
    variants["claim (names)"] = (postgres.QUERIES["claim"].sql, [100, "bench", 30.0, NAMES])
    variants["claim_queues (4 queues)"] = (
        postgres.QUERIES["claim_queues"].sql,
        [100, "bench", 30.0, NAMES, QUEUES],
    )
    schema = f"claim_bench_{uuid.uuid4().hex[:8]}"
    conn = await postgres.connect(url, schema, "claim-bench")
    try:
        await postgres.migrate(conn, schema)
        await conn.execute(
            "INSERT INTO tasks (id, name, queue, state, payload, max_attempts, priority, run_at)"
            " SELECT gen_random_uuid(), 'noop', 'q' || (i % 4), 'QUEUED', '1', 1, 0,"
            " now() - make_interval(secs => i) FROM generate_series(1, $1) i",
            count,
        )
        if keyed:
            # 100 keys, each at its limit of 1 already, so the keyed claim
            # walks its candidates and claims none: its worst case.
            await conn.execute(
                "INSERT INTO tasks (id, name, queue, state, payload, max_attempts, priority,"
                " run_at, concurrency_key, concurrency_limit)"
                " SELECT gen_random_uuid(), 'noop', 'q' || (i % 4),"
                " CASE WHEN i <= 100 THEN 'RUNNING' ELSE 'QUEUED' END, '1', 1, 5,"
                " now() - make_interval(secs => i), 'k' || (i % 100), 1"
                " FROM generate_series(1, $1) i",
                keyed,
            )
            variants["claim_keyed (all keys full)"] = (
                postgres.QUERIES["claim_keyed"].sql,
                ["default", 100, "bench", 30.0, NAMES, None, 1000, []],
            )
        await conn.execute("INSERT INTO queues (name) SELECT unnest($1::text[])", QUEUES)
        await conn.execute("ANALYZE tasks")
        times: dict[str, list[float]] = {label: [] for label in variants}
        for _ in range(rounds):
            for label, (sql, args) in variants.items():
                transaction = conn.transaction()
                await transaction.start()
                began = time.perf_counter()
                await conn.fetch(sql, *args)
                times[label].append((time.perf_counter() - began) * 1000)
                await transaction.rollback()
        for label, taken in times.items():
            taken.sort()
            print(
                f"{label:28s} median {statistics.median(taken):.2f} ms, "
                f"p10 {taken[len(taken) // 10]:.2f}, p90 {taken[len(taken) * 9 // 10]:.2f}"
            )
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("-n", type=int, default=20000, help="ready tasks (default 20000)")
    parser.add_argument("--rounds", type=int, default=300, help="claims per variant")
    parser.add_argument("--before", type=Path, help="another tree's sql/queries.sql")
    parser.add_argument(
        "--keyed", type=int, default=0, help="ready tasks with a concurrency key ahead (default 0)"
    )
    args = parser.parse_args()
    before = args.before.read_text() if args.before else None
    asyncio.run(bench(args.url, args.n, args.rounds, before, args.keyed))


if __name__ == "__main__":
    main()
