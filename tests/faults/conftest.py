"""Fixtures of the tests that run scheduler processes (test_faults, test_exits)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from test_faults import ReplicaProcess


@pytest.fixture
async def results(database_url: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection, and the table `faultapp` handlers record their runs in."""
    conn = await asyncpg.connect(database_url)
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(
        f'CREATE TABLE "{schema}".fault_results (n integer NOT NULL, pid integer NOT NULL)'
    )
    yield conn
    await conn.close()


@pytest.fixture
async def processes() -> AsyncIterator[list[ReplicaProcess]]:
    """The replica processes a test launched, killed at its end if still running."""
    started: list[ReplicaProcess] = []
    yield started
    for p in started:
        await p.close()
