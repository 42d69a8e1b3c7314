"""Store-level benchmark: the database side of the hot path, without gRPC or handlers.

Inserts N no-op tasks in batches of 500 through `Store.insert`, then drains
them with `Store.claim` (100) and `Store.complete` (100) in a loop, in a fresh
schema that is dropped afterwards. A variant first drops one trigger or index
to measure what it costs, or (history) adds a million finished tasks.

    .venv/bin/python scripts/store_bench.py [--url URL] [-n 20000] [--variant base]

Speed is measured here, never asserted; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime

from treadle.common.tasks import TaskState
from treadle.scheduler import postgres
from treadle.scheduler.model import NewTask, Outcome
from treadle.scheduler.store import Store

VARIANTS = {
    "base": [],
    "no-watch-trigger": ["DROP TRIGGER tasks_changed ON tasks"],
    "no-ready-by-queue-index": ["DROP INDEX tasks_ready_by_queue"],
    "no-lease-index": ["DROP INDEX tasks_leases"],
    "no-list-index": ["DROP INDEX tasks_queue_state_seq"],
    "no-finished-index": ["DROP INDEX tasks_finished"],
    # A million finished tasks of another queue beside the backlog, vacuumed.
    "history": [
        "INSERT INTO tasks (id, name, queue, state, payload, run_at, created_at, started_at,"
        " finished_at, attempts, max_attempts) SELECT gen_random_uuid(), 'noop', 'history',"
        " 'SUCCEEDED', 'null', now(), now(), now(), now(), 1, 1 FROM generate_series(1, 1000000)",
        "VACUUM (ANALYZE) tasks",
        "CHECKPOINT",
    ],
}


async def run(url: str, count: int, variant: str) -> str:
    schema = f"store_bench_{uuid.uuid4().hex[:8]}"
    pool = await postgres.create_pool(url, schema, 4)
    try:
        async with postgres.acquired(pool) as conn:
            await postgres.migrate(conn, schema)
            for statement in VARIANTS[variant]:
                await conn.execute(statement)
        store = Store(pool, schema)
        began = time.perf_counter()
        for _ in range(0, count, 500):
            await store.insert(
                [
                    NewTask(
                        id=uuid.uuid4(),
                        name="noop",
                        queue="bench",
                        payload_json="null",
                        priority=0,
                        run_at=None,
                        max_attempts=1,
                        idempotency_key=None,
                        tenant="default",
                    )
                    for _ in range(500)
                ]
            )
        insert_seconds = time.perf_counter() - began
        claim_seconds = complete_seconds = 0.0
        done = 0
        began = time.perf_counter()
        while True:
            a = time.perf_counter()
            tasks = await store.claim("store-bench", 100, 30, ["noop"])
            b = time.perf_counter()
            claim_seconds += b - a
            if not tasks:
                break
            now = datetime.now(UTC)
            await store.complete(
                [Outcome(t.lease, t.attempts, TaskState.SUCCEEDED, now, "null") for t in tasks]
            )
            complete_seconds += time.perf_counter() - b
            done += len(tasks)
        drain_seconds = time.perf_counter() - began
        batches = done / 100
        return (
            f"{variant}: insert {count / insert_seconds:,.0f} tasks/s, "
            f"drain {done / drain_seconds:,.0f} tasks/s, "
            f"claim {1000 * claim_seconds / batches:.2f} ms and "
            f"complete {1000 * complete_seconds / batches:.2f} ms per 100"
        )
    finally:
        async with postgres.acquired(pool) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("-n", type=int, default=20000, help="tasks (default 20000)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="base")
    args = parser.parse_args()
    print(asyncio.run(run(args.url, args.n, args.variant)))


if __name__ == "__main__":
    main()
