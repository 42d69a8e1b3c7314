"""PostgreSQL plumbing: pools, migrations, named queries, and driver-error translation.

asyncpg's exceptions enter our code here and nowhere else: `translated()`
turns them into Treadle's errors.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from treadle.common import errors

log = logging.getLogger("treadle.scheduler.postgres")

#: Seconds to wait for a new connection before calling the database unavailable.
CONNECT_TIMEOUT = 5.0

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


def load_queries() -> dict[str, str]:
    """The named blocks of every sql/*.sql file (migrations aside), by name."""
    queries: dict[str, str] = {}
    for entry in resources.files("treadle.scheduler").joinpath("sql").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        parts = _NAME.split(entry.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise RuntimeError(f"query {name!r} is defined twice in sql/")
            queries[name] = body.strip()
    return queries


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    folder = resources.files("treadle.scheduler").joinpath("sql/migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn asyncpg and connection errors into Treadle's errors."""
    try:
        yield
    except errors.TreadleError:
        raise
    except asyncpg.UniqueViolationError as exc:
        raise errors.AlreadyExists(exc.detail or str(exc)) from exc
    except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError) as exc:
        raise errors.Unavailable(f"database conflict, try again: {exc}") from exc
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.TooManyConnectionsError,
        asyncpg.AdminShutdownError,
        asyncpg.InterfaceError,
        # a connection broken mid-statement (the server went away) can leave
        # the protocol in a state asyncpg reports as an internal error
        asyncpg.InternalClientError,
        ConnectionError,
        OSError,
        TimeoutError,
    ) as exc:
        raise errors.Unavailable(f"database unavailable: {exc}") from exc
    except asyncpg.PostgresError as exc:
        log.exception("unexpected database error")
        raise errors.Internal() from exc


def server_settings(schema: str, app: str) -> dict[str, str]:
    """Session settings for every connection.

    Sequential and bitmap scans are discouraged: every statement Treadle runs
    touches a few rows through an index, but with stale statistics (a backlog
    that grew since the last ANALYZE) the planner otherwise reads and sorts the
    whole backlog for each claim, or scans the table to record 100 outcomes.
    """
    return {
        "search_path": schema,
        "application_name": app,
        "jit": "off",
        "enable_bitmapscan": "off",
        "enable_seqscan": "off",
    }


async def create_pool(
    url: str,
    schema: str,
    size: int,
    app: str = "treadle",
    connect: Callable[..., Awaitable[asyncpg.Connection]] | None = None,
) -> asyncpg.Pool:
    """A pool of connections to `schema`, opened by `connect` (default
    `asyncpg.connect`, which it takes the place of)."""
    with translated():
        pool: asyncpg.Pool = await asyncpg.create_pool(
            url,
            min_size=min(2, size),
            max_size=size,
            server_settings=server_settings(schema, app),
            # fail fast when the database is unreachable: callers get Unavailable
            timeout=CONNECT_TIMEOUT,
            connect=connect,
        )
    return pool


async def connect(url: str, schema: str, app: str = "treadle") -> asyncpg.Connection:
    with translated():
        conn: asyncpg.Connection = await asyncpg.connect(
            url, server_settings=server_settings(schema, app), timeout=CONNECT_TIMEOUT
        )
    return conn


async def migrate(conn: asyncpg.Connection, schema: str) -> list[int]:
    """Apply the migrations `schema` lacks; safe when several replicas start at once.

    Returns the versions applied. A transaction-scoped advisory lock serialises
    concurrent callers; the second one finds everything applied.
    """
    applied_now: list[int] = []
    with translated():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"treadle:{schema}")
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'SET LOCAL search_path = "{schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in load_migrations():
                if migration.version in done:
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied_now.append(migration.version)
                log.info("applied migration %04d_%s", migration.version, migration.name)
    return applied_now


async def check_schema(conn: asyncpg.Connection) -> None:
    """Fail unless the connection's schema has every migration applied."""
    latest = max(m.version for m in load_migrations())
    with translated():
        try:
            current = await conn.fetchval("SELECT max(version) FROM schema_migrations")
        except asyncpg.UndefinedTableError:
            current = None
    if current is None or current < latest:
        raise errors.Unavailable(
            f"database schema is at version {current}, expected {latest}: run `treadle migrate`"
        )


@contextlib.asynccontextmanager
async def acquired(pool: asyncpg.Pool) -> AsyncIterator[Any]:
    with translated():
        async with pool.acquire() as conn:
            yield conn
