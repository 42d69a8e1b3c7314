"""Start limits: at most N task starts of a queue per fixed window, across
every replica; per value of a payload field when the limit is keyed. Two real
replicas drain a backlog; the starts are counted per window from the tasks'
own started_at (database clock), in the windows the limit uses."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest
from scrape import scrape
from support import running_replica, until

from treadle.client import Client, TaskSpec
from treadle.common import errors
from treadle.scheduler.supervisor import Replica


@pytest.fixture
async def replicas(database_url: str, schema: str) -> AsyncIterator[tuple[Replica, Replica]]:
    async with (
        running_replica(database_url, schema) as first,
        running_replica(database_url, schema) as second,
    ):
        yield first, second


async def starts(database_url: str, schema: str, queue: str) -> list[tuple[float, str | None]]:
    """(started_at as seconds since the epoch, the payload's `customer`) of each
    started task of `queue`."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            f"SELECT extract(epoch FROM started_at)::float8 AS at, payload->>'customer' AS who "
            f'FROM "{schema}".tasks WHERE queue = $1 AND started_at IS NOT NULL',
            queue,
        )
    finally:
        await conn.close()
    return [(r["at"], r["who"]) for r in rows]


async def finished(database_url: str, schema: str, queue: str, count: int) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        done = await conn.fetchval(
            f"SELECT count(*) FROM \"{schema}\".tasks WHERE queue = $1 AND state = 'SUCCEEDED'",
            queue,
        )
    finally:
        await conn.close()
    return bool(done == count)


async def make_queue(client: Client, name: str) -> None:
    """Queues come to be when first used: one task, cancelled at once."""
    await client.cancel((await client.submit("noop", queue=name, delay_seconds=3600)).id)


def per_window(at: list[float], window: float) -> dict[int, int]:
    return dict(Counter(math.floor(t / window) for t in at))


async def test_a_start_limit_holds_across_two_replicas(
    replicas: tuple[Replica, Replica], database_url: str, schema: str
) -> None:
    limit, window, backlog = 10, 1.0, 50
    async with Client(replicas[0].address) as client:
        await make_queue(client, "paced")
        queue = await client.update_queue("paced", start_limit=limit, start_window_seconds=window)
        assert (queue.start_limit, queue.start_window_seconds) == (limit, window)
        assert queue.start_limit_key is None
        await client.submit_many([TaskSpec(name="noop", queue="paced")] * backlog)
        await until(lambda: finished(database_url, schema, "paced", backlog), timeout=15)
    counts = per_window([at for at, _ in await starts(database_url, schema, "paced")], window)
    print(f"\nstarts per {window} s window, limit {limit}: {[counts[w] for w in sorted(counts)]}")
    for replica in replicas:  # both claimed: the limit held across them, not by one alone
        metrics = await scrape(f"http://{replica.metrics_server.address}/metrics")
        assert metrics.value("treadle_tasks_started_total", queue="paced") > 0
    assert sum(counts.values()) == backlog
    assert max(counts.values()) <= limit, counts
    # Every window but the first (the limit may be found late in it) and the
    # last (the backlog ran out) started within 10 % of the limit.
    windows = sorted(counts)
    middle = [counts.get(w, 0) for w in range(windows[0] + 1, windows[-1])]
    assert len(middle) >= 3, counts
    assert all(n >= 0.9 * limit for n in middle), counts


async def test_a_keyed_start_limit_holds_per_value_across_two_replicas(
    replicas: tuple[Replica, Replica], database_url: str, schema: str
) -> None:
    limit, window, each = 3, 1.0, 9
    customers = ["ada", "bob", "cy"]
    async with Client(replicas[1].address) as client:
        await make_queue(client, "per-customer")
        queue = await client.update_queue(
            "per-customer",
            start_limit=limit,
            start_window_seconds=window,
            start_limit_key="customer",
        )
        assert queue.start_limit_key == "customer"
        specs = [
            TaskSpec(name="noop", queue="per-customer", payload_json=json.dumps({"customer": c}))
            for _ in range(each)
            for c in customers
        ]
        specs += [TaskSpec(name="noop", queue="per-customer")] * 6  # no customer: one key
        await client.submit_many(specs)
        await until(lambda: finished(database_url, schema, "per-customer", len(specs)), timeout=15)
    found = await starts(database_url, schema, "per-customer")
    assert len(found) == len(specs)
    for who in [*customers, None]:
        counts = per_window([at for at, w in found if w == who], window)
        assert max(counts.values()) <= limit, (who, counts)
        windows = sorted(counts)
        middle = [counts.get(w, 0) for w in range(windows[0] + 1, windows[-1])]
        assert all(n >= 0.9 * limit for n in middle), (who, counts)
    # The customers went side by side, not one after another.
    everyone = per_window([at for at, _ in found], window)
    assert max(everyone.values()) > limit


async def test_a_full_window_is_looked_at_again_when_it_ends_not_in_a_loop(
    database_url: str, schema: str
) -> None:
    """Other traffic wakes the dispatcher all the time; a queue whose window is
    full is not claimed from again until the window ends."""
    window = 2.0
    async with (
        running_replica(database_url, schema, poll_interval=0.2) as replica,
        Client(replica.address) as client,
    ):
        await make_queue(client, "slow")
        await client.update_queue("slow", start_limit=2, start_window_seconds=window)
        await client.submit_many([TaskSpec(name="noop", queue="slow")] * 20)
        await until(lambda: starts(database_url, schema, "slow"), timeout=5)
        url = f"http://{replica.metrics_server.address}/metrics"

        async def claims() -> float:
            metrics = await scrape(url)
            return metrics.value(
                "treadle_database_query_duration_seconds_count", query="claim_start_limited"
            )

        before = await claims()
        for n in range(100):  # 100 submits, each a NOTIFY that wakes the dispatcher
            await client.submit("noop", n)
            await asyncio.sleep(0.01)
        during = await claims() - before
        print(f"\nclaims of the held queue during 1 s of other traffic: {during:g}")
        # About one claim per window end (a second of traffic spans at most
        # one), a few more for the looks the poll interval makes at a held queue.
        assert during <= 4, during
        started = len(await starts(database_url, schema, "slow"))
        assert started <= 2 * math.ceil(3.5 / window) + 2


async def test_start_limits_are_checked_and_can_be_removed(
    replicas: tuple[Replica, Replica], database_url: str, schema: str
) -> None:
    async with Client(replicas[0].address) as client:
        for bad, says in (
            ({"start_limit": -1}, "start_limit must be positive"),
            ({"start_window_seconds": 0.0}, "start_window_seconds must be positive"),
            ({"start_window_seconds": 86401.0}, "at most 86400"),
            ({"start_limit_key": "a\x00b"}, "start_limit_key"),
        ):
            with pytest.raises(errors.InvalidArgument, match=says):
                await client.update_queue("default", **bad)  # type: ignore[arg-type]
        queue = await client.update_queue("default", start_limit=1)
        assert (queue.start_limit, queue.start_window_seconds) == (1, 1.0)
        queue = await client.update_queue("default", start_limit=0, start_limit_key="")
        assert queue.start_limit is None and queue.start_limit_key is None
        # With the limit gone, a backlog starts at once.
        await client.submit_many([TaskSpec(name="noop")] * 30)
        await until(lambda: finished(database_url, schema, "default", 30), timeout=5)
