"""A real replica (own schema) and a real gateway on loopback, run on an event loop
of their own in a thread, so that Hypothesis drives each example from a plain
synchronous test: `harness.run(coro)` runs one coroutine there and returns its
result. The replica's background loops keep running between examples, as they
would in production.

Hypothesis profiles (HYPOTHESIS_PROFILE selects one): `ci`, the default, a fixed
seed and a bounded number of examples, no shrinking (a failure is reported as
found, within pytest's time limit); `fuzz` (`make fuzz`), thousands of examples
from a random seed, shrunk to a minimal one on failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import grpc
import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from support import make_settings

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings as GatewaySettings
from treadle.scheduler import postgres
from treadle.scheduler.registry import load_app
from treadle.scheduler.supervisor import Replica

T = TypeVar("T")

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile(
    "ci",
    max_examples=30,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=_SLOW,
)
settings.register_profile(
    "fuzz",
    max_examples=2000,
    derandomize=False,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Statuses a request must never end with, whatever it holds.
BROKEN = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
#: Seconds one call may take.
CALL_TIMEOUT = 10.0


#: Payloads nest up to 1,500 deep; the json module recurses once per level.
_DEEP = 10_000


def decimal_json(text: str) -> Any:
    """The JSON text's value with every number a Decimal, so that two texts of
    the same JSON value compare equal (`1e+308` and `1000…0`, `1.0` and `1.00`)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, _DEEP))
    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal)
    finally:
        sys.setrecursionlimit(limit)


def same_json(a: Any, b: Any) -> bool:
    """Two values from `decimal_json` are the same JSON value: numbers by
    value, never a boolean for a number, strings and keys exactly. Iterative:
    payloads may nest deeper than Python recurses."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if isinstance(x, list):
            if not isinstance(y, list) or len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif isinstance(x, dict):
            if not isinstance(y, dict) or x.keys() != y.keys():
                return False
            pending.extend((x[k], y[k]) for k in x)
        elif isinstance(x, (bool, str, Decimal)) or x is None:
            if type(x) is not type(y) or x != y:
                return False
        else:
            raise AssertionError(f"not a JSON value: {x!r}")
    return True


class Harness:
    """A replica, a gateway in front of it, a gRPC stub and an HTTP client for
    them, and a connection to the replica's schema, all on one loop thread."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.schema = f"t_{uuid.uuid4().hex[:16]}"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop")
        self._thread.start()
        self.replica: Replica | None = None
        self.gateway: Gateway | None = None
        self.conn: asyncpg.Connection | None = None
        self.channel: grpc.aio.Channel | None = None
        self.http: httpx.AsyncClient | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def stub(self) -> pb_grpc.SchedulerServiceStub:
        assert self.channel is not None
        return pb_grpc.SchedulerServiceStub(self.channel)

    async def start(self) -> None:
        self.replica = Replica(make_settings(self.schema), load_app("taskapp"), self.database_url)
        await self.replica.start()
        # Retry jitter from a generator of its own: Hypothesis takes a change of the
        # global `random` state while it draws an example for a strategy's doing.
        self.replica.parts.worker.executor.random = random.Random(0).random
        self.gateway = Gateway(
            GatewaySettings(http_port=0, scheduler_address=self.replica.address, rpc_timeout=5.0)
        )
        await self.gateway.start()
        self.conn = await postgres.connect(self.database_url, self.schema, "treadle-fuzz")
        self.channel = grpc.aio.insecure_channel(self.replica.address)
        self.http = httpx.AsyncClient(base_url=self.gateway.url, timeout=CALL_TIMEOUT)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        if self.channel is not None:
            await self.channel.close()
        if self.conn is not None:
            await self.conn.close()
        if self.gateway is not None:
            await self.gateway.stop()
        if self.replica is not None:
            await self.replica.stop()
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()

    def close(self) -> None:
        try:
            self.run(self.stop())
            self.run(self.loop.shutdown_asyncgens())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    # -- what the properties check --------------------------------------------------

    async def count(self) -> int:
        """Rows in the schema's tasks table."""
        assert self.conn is not None
        return int(await self.conn.fetchval("SELECT count(*) FROM tasks"))

    async def db_now(self) -> datetime:
        """The database's clock (created_at comes from it)."""
        assert self.conn is not None
        now: datetime = await self.conn.fetchval("SELECT now()")
        return now

    def rows(self) -> int:
        return self.run(self.count())

    async def _wait_succeeded(self, task_id: str) -> pb.Task:
        deadline = time.monotonic() + 20
        while True:
            reply = await self.stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=CALL_TIMEOUT)
            if reply.task.state == pb.TASK_STATE_SUCCEEDED:
                return reply.task
            assert time.monotonic() < deadline, f"echo not SUCCEEDED in time: {reply.task}"
            await asyncio.sleep(0.05)

    async def _settled(self) -> None:
        """Every task due has been run to an end: none stays QUEUED or RUNNING (no
        handler the properties submit takes time), and every `echo` that
        succeeded returned its payload; one that did not, timed out."""
        assert self.conn is not None
        deadline = time.monotonic() + 20
        while True:
            busy = await self.conn.fetchval(
                "SELECT count(*) FROM tasks WHERE state IN ('QUEUED', 'RUNNING')"
            )
            if busy == 0:
                break
            assert time.monotonic() < deadline, f"{busy} tasks stay QUEUED or RUNNING"
            await asyncio.sleep(0.1)
        for state in (pb.TASK_STATE_SUCCEEDED, pb.TASK_STATE_DEAD):
            token = ""
            while True:
                page = await self.stub.ListTasks(
                    pb.ListTasksRequest(state=state, page_size=1000, page_token=token),
                    timeout=CALL_TIMEOUT,
                )
                for task in page.tasks:
                    if task.name != "echo":
                        continue
                    if state == pb.TASK_STATE_SUCCEEDED:
                        result, payload = decimal_json(task.result), decimal_json(task.payload)
                        assert same_json(result, payload), (task.payload, task.result)
                    else:
                        assert task.error.type == "TimeoutError", task.error
                token = page.next_page_token
                if not token:
                    break

    async def _still_serving(self) -> None:
        assert self.replica is not None
        await self._settled()
        dead = [name for name, alive in self.replica.loops.items() if not alive]
        assert dead == [], f"background loops died: {dead}"
        stub = self.stub
        now = pb.TaskSpec(name="echo", payload='{"still": "here"}')
        later = pb.TaskSpec(name="echo", payload='{"after": "promotion"}', delay_seconds=0.2)
        for spec in (now, later):
            submitted = await stub.SubmitTask(pb.SubmitTaskRequest(task=spec), timeout=CALL_TIMEOUT)
            task = await self._wait_succeeded(submitted.task.id)
            assert same_json(decimal_json(task.result), decimal_json(spec.payload))
        for state in pb.TaskState.values():
            await stub.ListTasks(pb.ListTasksRequest(state=state), timeout=CALL_TIMEOUT)
        await stub.ListQueueStats(pb.ListQueueStatsRequest(), timeout=CALL_TIMEOUT)
        await stub.GetSystemHealth(pb.GetSystemHealthRequest(), timeout=CALL_TIMEOUT)
        await stub.GetOverview(pb.GetOverviewRequest(), timeout=CALL_TIMEOUT)

    def assert_still_serving(self) -> None:
        """Every task due ran to a sane end, the replica's loops all run, it runs
        `echo` now and after a delay (through promotion), and every listing and
        statistic still answers."""
        self.run(self._still_serving())


@pytest.fixture
def harness(database_url: str) -> Iterator[Harness]:
    h = Harness(database_url)
    try:
        h.run(h.start())
        yield h
    finally:
        h.close()
