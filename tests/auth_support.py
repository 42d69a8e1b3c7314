"""Helpers for the authentication tests: a replica with API keys required, and
keys made through the real key store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from datetime import datetime

from support import make_settings

from treadle.common.access import AccessSettings
from treadle.scheduler.keys import KeyStore
from treadle.scheduler.principal import Principal, Scope
from treadle.scheduler.registry import load_app
from treadle.scheduler.supervisor import Replica

#: Who the tests' own key changes are recorded as.
OPERATOR = Principal("default", frozenset(Scope), key_name="cli:tests")


@contextlib.asynccontextmanager
async def authed_replica(
    database_url: str, schema: str, **overrides: object
) -> AsyncIterator[Replica]:
    """A started replica of the test app on `schema` with TREADLE_AUTH=keys."""
    replica = Replica(
        make_settings(schema, **overrides),
        load_app("taskapp"),
        database_url,
        access=AccessSettings(auth="keys"),
    )
    await replica.start()
    try:
        yield replica
    finally:
        await replica.stop()


def key_store(replica: Replica) -> KeyStore:
    return KeyStore(replica.parts.store.pool)


async def make_key(
    replica: Replica,
    scopes: Iterable[Scope],
    tenant: str = "default",
    name: str = "test",
    expires_at: datetime | None = None,
) -> str:
    """A new key's token."""
    made = await key_store(replica).create(
        tenant, name, scopes, actor=OPERATOR, expires_at=expires_at
    )
    return made.token
