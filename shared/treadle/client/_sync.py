"""A thin blocking wrapper over the async client, for code without an event loop.

Each call of `SyncClient` is the `Client` method of the same name, run to the
end on the wrapper's own event loop (`_blocking`); so the two cannot drift
apart in signatures or docs.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from treadle.client._async import DEFAULT_ADDRESS, Client
from treadle.common.tasks import Task
from treadle.common.tls import TLSConfig

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncClient, P], T]:
    """The async `method` as a blocking method of `SyncClient`."""

    @functools.wraps(method)
    def call(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._client, *args, **kwargs))

    return call


class SyncClient:
    """The same calls as `Client`, blocking. Not for use inside a running event loop."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float = 10.0,
        tls: TLSConfig | None = None,
        api_key: str | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._client: Client = self._run(self._make(address, timeout, tls, api_key))

    @staticmethod
    async def _make(
        address: str, timeout: float, tls: TLSConfig | None, api_key: str | None
    ) -> Client:
        return Client(address, timeout=timeout, tls=tls, api_key=api_key)

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

    submit = _blocking(Client.submit)
    submit_spec = _blocking(Client.submit_spec)
    submit_many = _blocking(Client.submit_many)
    get = _blocking(Client.get)
    list = _blocking(Client.list)
    count_tasks = _blocking(Client.count_tasks)
    retry_tasks = _blocking(Client.retry_tasks)
    cancel_tasks = _blocking(Client.cancel_tasks)
    purge_tasks = _blocking(Client.purge_tasks)
    cancel = _blocking(Client.cancel)
    retry = _blocking(Client.retry)
    list_replicas = _blocking(Client.list_replicas)
    list_queues = _blocking(Client.list_queues)
    get_queue = _blocking(Client.get_queue)
    update_queue = _blocking(Client.update_queue)
    pause_queue = _blocking(Client.pause_queue)
    resume_queue = _blocking(Client.resume_queue)
    create_schedule = _blocking(Client.create_schedule)
    list_schedules = _blocking(Client.list_schedules)
    pause_schedule = _blocking(Client.pause_schedule)
    resume_schedule = _blocking(Client.resume_schedule)
    delete_schedule = _blocking(Client.delete_schedule)
    queue_stats = _blocking(Client.queue_stats)
    list_queue_stats = _blocking(Client.list_queue_stats)
    overview = _blocking(Client.overview)
    trends = _blocking(Client.trends)
    error_patterns = _blocking(Client.error_patterns)
    system_health = _blocking(Client.system_health)
    audit_events = _blocking(Client.audit_events)
    create_key = _blocking(Client.create_key)
    list_keys = _blocking(Client.list_keys)
    revoke_key = _blocking(Client.revoke_key)
    rotate_key = _blocking(Client.rotate_key)
    wait = _blocking(Client.wait)

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
