"""Where `TaskRef.defer` sends its task: the `client=` it is given, else the
default client of this process.

The default is configured once, with `configure(address=..., api_key=...,
tls=...)`, or read from the environment on first use: the scheduler's
address from `TREADLE_SCHEDULER_ADDRESS` (default 127.0.0.1:50051) and the
key from `TREADLE_API_KEY`. An async client is bound to its event loop, so
the default keeps one per loop; `defer_sync` uses one blocking client.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from asyncio import AbstractEventLoop, get_running_loop
from typing import TYPE_CHECKING

from treadle.common.tls import TLSConfig

# The client is imported when a default client is first made, not with this
# module: a replica imports `treadle.tasks` to read its app, and submits nothing.
if TYPE_CHECKING:
    from treadle.client import Client, SyncClient


@dataclasses.dataclass(frozen=True)
class _Target:
    address: str
    api_key: str | None
    tls: TLSConfig | None


_lock = threading.Lock()
_target: _Target | None = None
_clients: weakref.WeakKeyDictionary[AbstractEventLoop, Client] = weakref.WeakKeyDictionary()
_sync_client: SyncClient | None = None


def configure(
    address: str | None = None, *, api_key: str | None = None, tls: TLSConfig | None = None
) -> None:
    """Set the scheduler `defer` and `defer_sync` call when given no `client=`
    (None: `TREADLE_SCHEDULER_ADDRESS`, else 127.0.0.1:50051). Clients made
    for an earlier configuration are dropped (not closed: calls may be in flight)."""
    global _target, _sync_client
    with _lock:
        _target = _Target(address or _env_address(), api_key, tls)
        _clients.clear()
        _sync_client = None


def _env_address() -> str:
    from treadle.client._async import DEFAULT_ADDRESS

    return os.environ.get("TREADLE_SCHEDULER_ADDRESS") or DEFAULT_ADDRESS


def _current_target() -> _Target:
    global _target
    if _target is None:
        _target = _Target(_env_address(), os.environ.get("TREADLE_API_KEY") or None, None)
    return _target


def default_client() -> Client:
    """The default async client of the running event loop."""
    from treadle.client import Client

    loop = get_running_loop()
    with _lock:
        client = _clients.get(loop)
        if client is None:
            target = _current_target()
            client = Client(target.address, api_key=target.api_key, tls=target.tls)
            _clients[loop] = client
        return client


def default_sync_client() -> SyncClient:
    """The default blocking client (for `defer_sync`)."""
    from treadle.client import SyncClient

    global _sync_client
    with _lock:
        if _sync_client is None:
            target = _current_target()
            _sync_client = SyncClient(target.address, api_key=target.api_key, tls=target.tls)
        return _sync_client
