"""Fixtures on real parts: a real PostgreSQL, real grpc.aio servers on loopback.

PostgreSQL comes from TREADLE_TEST_DATABASE_URL, else 127.0.0.1:5432 when it
answers, else an embedded server started for the session
(TREADLE_TEST_DATABASE_URL=embedded forces that one). Every test gets its
own schema, dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from support import make_settings, running_replica
from tls_files import Pki

from treadle.client import Client
from treadle.scheduler import postgres
from treadle.scheduler.embedded import embedded_postgres
from treadle.scheduler.registry import load_app
from treadle.scheduler.settings import Settings
from treadle.scheduler.supervisor import Replica

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/test"


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@pytest.fixture
def pg_dir() -> Iterator[Path]:
    """A folder for an embedded PostgreSQL's data. Not pytest's tmp_path: that
    is private to root (0700), and the server runs as another user when the
    tests run as root."""
    path = Path(tempfile.mkdtemp(prefix="treadle-pg-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("TREADLE_TEST_DATABASE_URL")
    if url and url != "embedded":
        yield url
    elif url != "embedded" and asyncio.run(_answers(LOCAL_URL)):
        yield LOCAL_URL
    else:
        path = Path(tempfile.mkdtemp(prefix="treadle-pg-"))
        path.chmod(0o755)
        try:
            with embedded_postgres(path) as embedded_url:
                yield embedded_url
        finally:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def db(database_url: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A migrated schema and a connection whose search_path is it."""
    conn = await postgres.connect(database_url, schema, "treadle-tests")
    await postgres.migrate(conn, schema)
    yield conn
    await conn.close()


@pytest.fixture
def settings(schema: str) -> Settings:
    return make_settings(schema)


@pytest.fixture
async def replica(database_url: str, settings: Settings) -> AsyncIterator[Replica]:
    started = Replica(settings, load_app("taskapp"), database_url)
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
async def client(replica: Replica) -> AsyncIterator[Client]:
    async with Client(replica.address) as c:
        yield c


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Certificates made for this test (trustme): a CA, the scheduler's, a client's
    and one from another CA, as PEM files (`tls_files`)."""
    return Pki.make(tmp_path / "pki")


@pytest.fixture
async def tls_replica(database_url: str, schema: str, pki: Pki) -> AsyncIterator[Replica]:
    """A replica serving TLS with `pki`'s certificate for localhost and 127.0.0.1."""
    async with running_replica(
        database_url, schema, tls_cert=str(pki.server.cert), tls_key=str(pki.server.key)
    ) as replica:
        yield replica


@pytest.fixture
async def mtls_replica(database_url: str, schema: str, pki: Pki) -> AsyncIterator[Replica]:
    """A replica that also requires client certificates signed by `pki`'s CA."""
    async with running_replica(
        database_url,
        schema,
        tls_cert=str(pki.server.cert),
        tls_key=str(pki.server.key),
        tls_client_ca=str(pki.ca),
    ) as replica:
        yield replica
