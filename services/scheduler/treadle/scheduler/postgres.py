"""PostgreSQL plumbing: pools, migrations, named queries, and driver-error translation.

asyncpg's exceptions enter our code here and nowhere else. One table (`_ERRORS`)
says what each means: `translated()` turns them into Treadle's errors, and
`error_kind()` names them for metrics. `ConnectHook` opens the pool's
connections, and tells an observer of each connection and of every statement,
named after its block in `sql/`. `pool_health()` reads the pool's figures;
`from_row()` builds a dataclass from a row whose columns are named like its fields
(an infinite timestamptz read as the earliest or latest UTC time: `finite_time`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

import asyncpg

from treadle.common import errors
from treadle.common.health import PoolHealth
from treadle.common.queries import Query, parse_queries

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger("treadle.scheduler.postgres")

#: A dataclass built from a row (`from_row`).
Row = TypeVar("Row", bound="DataclassInstance")

#: A pool of connections (for modules that do not speak asyncpg).
Pool: TypeAlias = asyncpg.Pool

#: Seconds to wait for a new connection before calling the database unavailable.
CONNECT_TIMEOUT = 5.0
#: Seconds `close_pool` waits for the pool's connections to close before terminating them.
CLOSE_TIMEOUT = 5.0
#: The `query` label of statements that are not a named block of sql/.
OTHER = "other"

_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


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


def _unexpected(exc: BaseException) -> errors.TreadleError:
    log.error("unexpected database error", exc_info=exc)
    return errors.Internal()


#: What each driver error means, most specific first: its kind (the `kind`
#: label of treadle_database_errors_total) and the Treadle error it becomes.
_ERRORS: tuple[
    tuple[tuple[type[BaseException], ...], str, Callable[[Any], errors.TreadleError]], ...
] = (
    (
        (asyncpg.UniqueViolationError,),
        "unique_violation",
        lambda exc: errors.AlreadyExists(exc.detail or str(exc)),
    ),
    (
        (asyncpg.SerializationError, asyncpg.DeadlockDetectedError),
        "conflict",
        lambda exc: errors.Unavailable(f"database conflict, try again: {exc}"),
    ),
    # a statement_timeout: the server cancelled it
    ((asyncpg.QueryCanceledError,), "timeout", _unexpected),
    # before OSError, of which it is a subclass
    ((TimeoutError,), "timeout", lambda exc: errors.Unavailable(f"database unavailable: {exc}")),
    (
        (
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
        ),
        "connection",
        lambda exc: errors.Unavailable(f"database unavailable: {exc}"),
    ),
    ((asyncpg.PostgresError,), "database", _unexpected),
)


def _meaning(
    exc: BaseException,
) -> tuple[str, Callable[[Any], errors.TreadleError]] | None:
    for classes, kind, error in _ERRORS:
        if isinstance(exc, classes):
            return kind, error
    return None


def error_kind(exc: BaseException) -> str:
    """A bounded name for why a statement failed: a kind of `_ERRORS`,
    cancelled (we cancelled it), or other."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    meaning = _meaning(exc)
    return OTHER if meaning is None else meaning[0]


def refused(exc: BaseException) -> bool:
    """Whether a statement failed for what it carries or the rows it touches
    (a data error, a constraint: it will fail again as it is), rather than for
    the database's state (unreachable, a timeout, a conflict: try again).
    Looks through a translated error to the driver's."""
    return error_kind(exc.__cause__ or exc) in ("database", "unique_violation")


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn asyncpg and connection errors into Treadle's errors (`_ERRORS`)."""
    try:
        yield
    except errors.TreadleError:
        raise
    except Exception as exc:
        meaning = _meaning(exc)
        if meaning is None:
            raise
        raise meaning[1](exc) from exc


def server_settings(schema: str, app: str) -> dict[str, str]:
    """Session settings for every connection.

    Sequential and bitmap scans are discouraged: every statement Treadle runs
    touches a few rows through an index, but with stale statistics (a backlog
    that grew since the last ANALYZE) the planner otherwise reads and sorts the
    whole backlog for each claim, or scans the table to record 100 outcomes.

    Prepared statements keep one generic plan (`plan_cache_mode`): by default
    PostgreSQL plans `insert_tasks` (a CTE over 13 unnested arrays) afresh on
    every execution, which cost a single submit 0.15 of its 0.5 ms in the
    database; Treadle's statements take the same path whatever their
    parameters (an index chosen by constants in the SQL, a LIMIT), so the
    plan made once fits every call. Batches are not slower with it
    (`scripts/store_bench.py`: same drain and claim times).
    """
    return {
        "search_path": schema,
        "application_name": app,
        "jit": "off",
        "enable_bitmapscan": "off",
        "enable_seqscan": "off",
        "plan_cache_mode": "force_generic_plan",
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
            reset=_keep_session,
        )
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a pool connection is reset with when it is released: nothing more
    than asyncpg's own local reset (an open transaction is rolled back, local
    listeners dropped). Its default also sends `RESET ALL; UNLISTEN *; CLOSE
    ALL; pg_advisory_unlock_all()`, a round trip on every release that costs a
    single submit a third of its time; Treadle's statements leave no session
    state to undo: settings are per connection (`server_settings`) or `SET
    LOCAL`, locks are transaction-scoped, and LISTEN has its own connection
    (`listener`)."""


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close the pool's connections, or terminate them when that takes too long."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await pool.close()
    except (TimeoutError, Exception):
        pool.terminate()


def pool_health(pool: asyncpg.Pool) -> PoolHealth:
    size = pool.get_size()
    return PoolHealth(
        size=size,
        max_size=pool.get_max_size(),
        in_use=size - pool.get_idle_size(),
        waiting=pool_waiting(pool),
    )


def pool_waiting(pool: asyncpg.Pool) -> int:
    """Callers blocked in `pool.acquire()`. asyncpg has no public API for it:
    its free connections sit in an asyncio.Queue, whose waiting getters we count."""
    queue = getattr(pool, "_queue", None)
    getters = getattr(queue, "_getters", ())
    return sum(1 for waiter in getters if not waiter.done())


class PoolObserver(Protocol):
    """Told of the pool's connections and statements (`metrics.SchedulerMetrics`)."""

    def connected(self, again: bool) -> None:
        """A connection opened; `again`: the first since the database was unreachable."""

    def connect_failed(self, kind: str) -> None:
        """A connection failed to open, for a reason of `kind` (see `error_kind`)."""

    def query_done(self, name: str, seconds: float, error: str | None) -> None:
        """Statement `name` (a block of sql/, else OTHER) took `seconds`;
        `error` is the kind of its failure, None when it succeeded."""


class ConnectHook:
    """A pool's `connect`: `asyncpg.connect`, with every connection and every
    statement on it (a query logger) told to `observer`."""

    def __init__(self, observer: PoolObserver) -> None:
        self.observer = observer
        self._names = {text: name for name, text in load_queries().items()}
        #: A connection failed (to open, or mid-statement) since the last one opened.
        self._unreachable = False

    async def connect(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(*args, **kwargs)
        except (Exception, asyncio.CancelledError) as exc:
            self.observer.connect_failed(error_kind(exc))
            self._unreachable = True
            raise
        conn.add_query_logger(self._logged)
        again, self._unreachable = self._unreachable, False
        self.observer.connected(again)
        return conn

    def _logged(self, record: Any) -> None:
        name = self._names.get(record.query, OTHER)
        kind = None if record.exception is None else error_kind(record.exception)
        self.observer.query_done(name, record.elapsed, kind)
        if kind == "connection":
            self._unreachable = True


async def connect(url: str, schema: str, app: str = "treadle") -> asyncpg.Connection:
    with translated():
        conn: asyncpg.Connection = await asyncpg.connect(
            url, server_settings=server_settings(schema, app), timeout=CONNECT_TIMEOUT
        )
    return conn


#: The line of baseline.sql that says which migrations it holds.
_BASELINE = re.compile(r"^-- baseline: (\d+)$", re.MULTILINE)


def load_baseline() -> tuple[int, str] | None:
    """The baseline (sql/baseline.sql): the newest migration it holds, and its
    script; None when there is none."""
    path = resources.files("treadle.scheduler").joinpath("sql/baseline.sql")
    if not path.is_file():
        return None
    sql = path.read_text()
    found = _BASELINE.search(sql)
    if found is None:
        raise ValueError("sql/baseline.sql lacks its '-- baseline: N' line")
    return int(found[1]), sql


async def migrate(conn: asyncpg.Connection, schema: str, *, baseline: bool = True) -> list[int]:
    """Apply the migrations `schema` lacks; safe when several replicas start at once.

    Returns the versions applied. A transaction-scoped advisory lock serialises
    concurrent callers; the second one finds everything applied. A schema with
    none applied gets the baseline (`baseline.sql`: what the migrations it
    holds make, in one script, generated from them by scripts/baseline.py),
    recorded as those migrations, then the newer ones; `baseline=False` runs
    every migration instead (the baseline's own check and generator do).
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
            migrations = load_migrations()
            held = load_baseline() if baseline and not done else None
            if held is not None:
                covered, sql = held
                await conn.execute(sql)
                done = {m.version for m in migrations if m.version <= covered}
                await conn.executemany(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    [(m.version, m.name) for m in migrations if m.version in done],
                )
                applied_now.extend(sorted(done))
                log.info("applied migrations 0001 to %04d (the baseline)", covered)
            for migration in migrations:
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


# -- named queries ----------------------------------------------------------------
#
# Every statement the stores run is a named block of sql/*.sql that declares its
# parameters, in $1..$n order, on `-- params:` lines (a long list goes on over
# several; `treadle.common.queries` reads them). The files are parsed once,
# when this module is imported; a block whose declared parameters do not match
# its placeholders stops the import. Callers bind by name:
# `await fetch(conn, "get_task", id=task_id)`.


def _load_queries() -> dict[str, Query]:
    queries: dict[str, Query] = {}
    folder = resources.files("treadle.scheduler").joinpath("sql")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, query in parse_queries(entry.read_text(), f"sql/{entry.name}").items():
            if name in queries:
                raise ValueError(f"query {name} is defined twice in sql/")
            queries[name] = query
    return queries


#: Every named query of sql/*.sql (migrations aside), by name.
QUERIES: Mapping[str, Query] = _load_queries()


def load_queries() -> dict[str, str]:
    """The SQL text of every named query, by name."""
    return {name: query.sql for name, query in QUERIES.items()}


async def fetch(conn: Any, name: str, /, **params: Any) -> list[asyncpg.Record]:
    """Run the named query on `conn` with `params` bound by name; its rows."""
    query = QUERIES[name]
    rows: list[asyncpg.Record] = await conn.fetch(query.sql, *query.args(**params))
    return rows


async def fetchval(conn: Any, name: str, /, **params: Any) -> Any:
    """Run the named query on `conn`; the first column of its first row."""
    query = QUERIES[name]
    return await conn.fetchval(query.sql, *query.args(**params))


async def execute(conn: Any, name: str, /, **params: Any) -> str:
    """Run the named query on `conn`; its status (such as 'UPDATE 3')."""
    query = QUERIES[name]
    status: str = await conn.execute(query.sql, *query.args(**params))
    return status


def finite_time(value: Any) -> Any:
    """`value`, unless it is the naive datetime asyncpg decodes a timestamptz
    'infinity' or '-infinity' as (datetime.max, datetime.min): then the same
    instant in UTC, so that a row written by hand can always be read, compared
    and encoded (whoever needs to know it was not finite checks `infinite`)."""
    if type(value) is datetime and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def infinite(value: Any) -> bool:
    """Whether `value` is a timestamptz column's 'infinity' or '-infinity', as
    asyncpg decodes it (a naive datetime; finite ones are aware)."""
    return type(value) is datetime and value.tzinfo is None


def from_row(cls: type[Row], row: Mapping[str, Any], /, **given: Any) -> Row:
    """A `cls` (a dataclass) from `row`: each field from the column of its name,
    unless `given` holds it (a renamed column, or a value decoded). Any mapping
    will do as `row`: `vars()` of another dataclass copies its same-named fields.
    Infinite times come out as the earliest or latest UTC time (`finite_time`):
    reading a row never fails on them."""
    read = {
        f.name: finite_time(row[f.name])
        for f in dataclasses.fields(cls)
        if f.init and f.name not in given
    }
    return cls(**read, **given)


def affected(status: str) -> int:
    """The row count of a status such as 'DELETE 3'."""
    return int(status.rsplit(" ", 1)[-1])


class PoolStore:
    """The base of the stores: named queries run on a pool, each on a
    connection of its own, with driver errors translated."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _fetch(self, name: str, /, **params: Any) -> list[asyncpg.Record]:
        async with acquired(self.pool) as conn:
            return await fetch(conn, name, **params)

    async def _fetchval(self, name: str, /, **params: Any) -> Any:
        async with acquired(self.pool) as conn:
            return await fetchval(conn, name, **params)

    async def _execute(self, name: str, /, **params: Any) -> str:
        async with acquired(self.pool) as conn:
            return await execute(conn, name, **params)
