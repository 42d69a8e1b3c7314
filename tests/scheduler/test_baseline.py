"""The baseline (sql/baseline.sql) that a fresh schema gets instead of every
migration: it holds the newest migration, and it makes exactly the schema the
migrations make, one after another (columns in order, defaults, constraints,
indexes, triggers, functions, sequences)."""

from __future__ import annotations

from typing import Any

import asyncpg

from treadle.scheduler import postgres

#: What a schema holds, each read from the catalogs with the schema's name
#: written as `$schema` (indexes and triggers name it).
CATALOG = {
    "columns": """
        SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = $1
        ORDER BY table_name, ordinal_position""",
    "constraints": """
        SELECT r.relname, c.conname, c.contype, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
        WHERE r.relnamespace = $1::regnamespace ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = $1
        ORDER BY 1, 2""",
    "triggers": """
        SELECT r.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
        WHERE r.relnamespace = $1::regnamespace AND NOT t.tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_function_identity_arguments(oid), pg_get_function_result(oid),
               provolatile, proparallel, prosrc
        FROM pg_proc WHERE pronamespace = $1::regnamespace ORDER BY 1, 2""",
    "relations": """
        SELECT relname, relkind FROM pg_class WHERE relnamespace = $1::regnamespace
        ORDER BY 1""",
    "migrations": "SELECT version, name FROM schema_migrations ORDER BY version",
}


async def describe(conn: asyncpg.Connection, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    await conn.execute(f'SET search_path = "{schema}"')
    found = {}
    for what, sql in CATALOG.items():
        rows = await conn.fetch(sql, schema) if "$1" in sql else await conn.fetch(sql)
        found[what] = [
            tuple(str(v).replace(f'"{schema}".', "$schema.").replace(f"{schema}.", "$schema.")
                  for v in row.values())
            for row in rows
        ]  # fmt: skip
    return found


def test_the_baseline_holds_the_newest_migration() -> None:
    held = postgres.load_baseline()
    assert held is not None
    newest = max(m.version for m in postgres.load_migrations())
    assert held[0] == newest, (
        f"sql/baseline.sql holds migrations up to {held[0]:04d}, the newest is {newest:04d}: "
        "run `.venv/bin/python scripts/baseline.py`"
    )


async def test_the_baseline_makes_the_schema_the_migrations_make(
    database_url: str, schema: str
) -> None:
    one_by_one = f"{schema}_seq"
    conn = await postgres.connect(database_url, schema, "treadle-tests")
    try:
        assert await postgres.migrate(conn, schema) == [
            m.version for m in postgres.load_migrations()
        ]
        await postgres.migrate(conn, one_by_one, baseline=False)
        from_baseline = await describe(conn, schema)
        from_migrations = await describe(conn, one_by_one)
        for what in CATALOG:
            assert from_baseline[what] == from_migrations[what], (
                f"{what} differ: run `.venv/bin/python scripts/baseline.py`"
            )
        assert await postgres.migrate(conn, schema) == [], "applied once"
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{one_by_one}" CASCADE')
        await conn.close()
