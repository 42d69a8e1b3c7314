"""A thin blocking wrapper over the async client, for code without an event loop."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from treadle.client._async import DEFAULT_ADDRESS, Client
from treadle.common import stats, tasks
from treadle.common.tasks import Task, TaskSpec, TaskState

T = TypeVar("T")


class SyncClient:
    """The same calls as `Client`, blocking. Not for use inside a running event loop."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._client: Client = self._run(self._make(address, timeout))

    @staticmethod
    async def _make(address: str, timeout: float) -> Client:
        return Client(address, timeout=timeout)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._run(self._client.close())
            self._loop.close()

    def submit(self, name: str, payload: Any = None, **options: Any) -> Task:
        return self._run(self._client.submit(name, payload, **options))

    def submit_spec(self, spec: TaskSpec) -> tasks.Submitted:
        return self._run(self._client.submit_spec(spec))

    def submit_many(self, specs: Sequence[TaskSpec]) -> list[str]:
        return self._run(self._client.submit_many(specs))

    def get(self, task_id: str) -> Task:
        return self._run(self._client.get(task_id))

    def list(
        self,
        *,
        queue: str | None = None,
        state: TaskState | None = None,
        page_size: int | None = None,
        cursor: str | None = None,
    ) -> tasks.TaskPage:
        return self._run(
            self._client.list(queue=queue, state=state, page_size=page_size, cursor=cursor)
        )

    def cancel(self, task_id: str) -> Task:
        return self._run(self._client.cancel(task_id))

    def retry(self, task_id: str) -> Task:
        return self._run(self._client.retry(task_id))

    def list_replicas(self) -> builtins.list[tasks.ReplicaInfo]:
        return self._run(self._client.list_replicas())

    def list_queues(self) -> builtins.list[tasks.Queue]:
        return self._run(self._client.list_queues())

    def get_queue(self, name: str) -> tasks.Queue:
        return self._run(self._client.get_queue(name))

    def update_queue(self, name: str, **settings: Any) -> tasks.Queue:
        return self._run(self._client.update_queue(name, **settings))

    def pause_queue(self, name: str) -> tasks.Queue:
        return self._run(self._client.pause_queue(name))

    def resume_queue(self, name: str) -> tasks.Queue:
        return self._run(self._client.resume_queue(name))

    def create_schedule(
        self, name: str, cron: str, task: TaskSpec, timezone: str = "UTC"
    ) -> tasks.Schedule:
        return self._run(self._client.create_schedule(name, cron, task, timezone))

    def list_schedules(self) -> builtins.list[tasks.Schedule]:
        return self._run(self._client.list_schedules())

    def pause_schedule(self, name: str) -> tasks.Schedule:
        return self._run(self._client.pause_schedule(name))

    def resume_schedule(self, name: str) -> tasks.Schedule:
        return self._run(self._client.resume_schedule(name))

    def delete_schedule(self, name: str) -> None:
        self._run(self._client.delete_schedule(name))

    def queue_stats(self, queue: str) -> stats.QueueStats:
        return self._run(self._client.queue_stats(queue))

    def list_queue_stats(self) -> builtins.list[stats.QueueStats]:
        return self._run(self._client.list_queue_stats())

    def overview(self) -> stats.Overview:
        return self._run(self._client.overview())

    def trends(self, **options: Any) -> stats.Trends:
        return self._run(self._client.trends(**options))

    def error_patterns(self, **options: Any) -> builtins.list[stats.ErrorPattern]:
        return self._run(self._client.error_patterns(**options))

    def system_health(self) -> stats.SystemHealth:
        return self._run(self._client.system_health())

    def wait(self, task_id: str, timeout: float = 30.0) -> Task:
        return self._run(self._client.wait(task_id, timeout))

    def watch(self, task_id: str) -> Iterator[Task]:
        updates = self._client.watch(task_id)

        async def step() -> Task | None:
            return await anext(updates, None)

        try:
            while (task := self._run(step())) is not None:
                yield task
        finally:
            if not self._loop.is_closed():
                self._run(updates.aclose())
