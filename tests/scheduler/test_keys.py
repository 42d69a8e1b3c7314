"""API keys on a real PostgreSQL: made, listed, revoked and rotated through the
key store, and checked by the authenticator (hash compared in constant time,
rows cached for a few seconds, last use written in batches). Every named
query of keys.sql and audit.sql matches on the tenant, or says why not."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from auth_support import OPERATOR

from treadle.common import errors
from treadle.scheduler import postgres
from treadle.scheduler.audit import AuditLog
from treadle.scheduler.keys import PREFIX, Authenticator, KeyStore, parse_scopes
from treadle.scheduler.principal import Scope

SUBMIT_READ = (Scope.SUBMIT, Scope.READ)


@pytest.fixture
async def pool(db: asyncpg.Connection, database_url: str, schema: str) -> AsyncIterator[Any]:
    """A pool on the migrated schema (`db` migrated it)."""
    opened = await postgres.create_pool(database_url, schema, 2)
    yield opened
    await postgres.close_pool(opened)


@pytest.fixture
def keys(pool: Any) -> KeyStore:
    return KeyStore(pool)


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


async def test_a_key_is_shown_once_and_stored_as_a_hash(
    keys: KeyStore, db: asyncpg.Connection
) -> None:
    made = await keys.create("acme", "ci-deploy", SUBMIT_READ, actor=OPERATOR)
    assert re.fullmatch(r"trdl_[0-9a-f]{16}_[0-9a-f]{64}", made.token)
    assert made.token.startswith(f"{PREFIX}{made.key.id}_")
    key = made.key
    assert (key.tenant, key.name, key.scopes) == ("acme", "ci-deploy", SUBMIT_READ)
    assert key.expires_at is None and key.revoked_at is None and key.last_used_at is None
    row = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", key.id)
    assert bytes(row["secret_hash"]) == hashlib.sha256(made.token.encode()).digest()
    secret = made.token.rsplit("_", 1)[1]
    assert all(secret not in str(value) for value in row.values())
    assert await keys.list("acme") == [key]
    assert await keys.list("other") == []


async def test_bad_input_is_refused(keys: KeyStore) -> None:
    with pytest.raises(errors.InvalidArgument, match="tenant must be"):
        await keys.create("Not A Tenant", "x", SUBMIT_READ, actor=OPERATOR)
    with pytest.raises(errors.InvalidArgument, match="scopes must be one or more of"):
        parse_scopes("submit,write")
    past = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(errors.InvalidArgument, match="expiry must be in the future"):
        await keys.create("acme", "x", SUBMIT_READ, actor=OPERATOR, expires_at=past)
    assert parse_scopes(" admin, submit ") == (Scope.SUBMIT, Scope.ADMIN)


async def test_authentication_gives_the_keys_principal(keys: KeyStore) -> None:
    made = await keys.create("acme", "ci", SUBMIT_READ, actor=OPERATOR)
    caller = await Authenticator(keys).authenticate(made.token)
    assert caller.tenant == "acme"
    assert caller.scopes == frozenset(SUBMIT_READ)
    assert (caller.key_id, caller.key_name) == (made.key.id, "ci")


@pytest.mark.parametrize(
    "token",
    ["", "Bearer x", "trdl_", "trdl_0123_abcd", "trdl_" + "g" * 16 + "_" + "0" * 64, "x" * 90],
)
async def test_a_malformed_token_is_refused_without_a_lookup(keys: KeyStore, token: str) -> None:
    with pytest.raises(errors.Unauthenticated, match="malformed API key"):
        await Authenticator(keys).authenticate(token)


async def test_unknown_keys_and_wrong_secrets_are_refused_alike(keys: KeyStore) -> None:
    made = await keys.create("acme", "ci", SUBMIT_READ, actor=OPERATOR)
    wrong = made.token[:-1] + ("0" if made.token[-1] != "0" else "1")
    unknown = f"{PREFIX}{'0' * 16}_{'0' * 64}"
    auth = Authenticator(keys)
    with pytest.raises(errors.Unauthenticated) as wrong_secret:
        await auth.authenticate(wrong)
    with pytest.raises(errors.Unauthenticated) as no_such_key:
        await auth.authenticate(unknown)
    for raised in (wrong_secret, no_such_key):
        assert "is not valid: no such key, or its secret does not match" in raised.value.message
    assert made.token.rsplit("_", 1)[1] not in wrong_secret.value.message


async def test_the_hash_is_compared_with_hmac_compare_digest(
    keys: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = await keys.create("acme", "ci", SUBMIT_READ, actor=OPERATOR)
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    await Authenticator(keys).authenticate(made.token)
    digest = hashlib.sha256(made.token.encode()).digest()
    assert compared == [(digest, digest)]


async def test_an_expired_key_is_refused(keys: KeyStore) -> None:
    now = datetime.now(UTC)
    made = await keys.create(
        "acme", "short", SUBMIT_READ, actor=OPERATOR, expires_at=now + timedelta(hours=1)
    )
    assert (await Authenticator(keys, clock=at(now)).authenticate(made.token)).tenant == "acme"
    later = Authenticator(keys, clock=at(now + timedelta(hours=1, seconds=1)))
    with pytest.raises(errors.Unauthenticated, match=r"API key trdl_\w+ \(short\) expired at"):
        await later.authenticate(made.token)


async def test_a_revoked_key_is_refused_once_the_cache_lets_go(keys: KeyStore) -> None:
    made = await keys.create("acme", "ci", SUBMIT_READ, actor=OPERATOR)
    cached = Authenticator(keys, cache_seconds=3600)
    fresh = Authenticator(keys, cache_seconds=0)
    await cached.authenticate(made.token)
    revoked = await keys.revoke("acme", made.key.prefix, actor=OPERATOR)
    assert revoked.revoked_at is not None
    assert revoked.status(datetime.now(UTC)) == "revoked"
    # The cache is what lets a revocation take up to CACHE_SECONDS.
    await cached.authenticate(made.token)
    with pytest.raises(errors.Unauthenticated, match=r"\(ci\) was revoked at"):
        await fresh.authenticate(made.token)


async def test_keys_of_another_tenant_cannot_be_revoked_or_rotated(keys: KeyStore) -> None:
    made = await keys.create("acme", "ci", SUBMIT_READ, actor=OPERATOR)
    with pytest.raises(errors.NotFound, match=r"no API key trdl_\w+ in tenant 'other'"):
        await keys.revoke("other", made.key.id, actor=OPERATOR)
    with pytest.raises(errors.NotFound):
        await keys.rotate("other", made.key.id, actor=OPERATOR, grace=timedelta(hours=1))
    await Authenticator(keys).authenticate(made.token)


async def test_rotation_keeps_both_keys_valid_until_the_grace_period_ends(
    keys: KeyStore,
) -> None:
    now = datetime.now(UTC)
    old = await keys.create(
        "acme", "ci", SUBMIT_READ, actor=OPERATOR, expires_at=now + timedelta(days=90)
    )
    new, old_now = await keys.rotate("acme", old.key.id, actor=OPERATOR, grace=timedelta(hours=24))
    assert new.token != old.token
    assert (new.key.name, new.key.scopes, new.key.rotated_from) == ("ci", SUBMIT_READ, old.key.id)
    # One lineage through rotations: what "the tasks this key submitted" matches on.
    assert new.key.lineage == old.key.lineage == old.key.id
    # The new key lasts as long as the old one was made to.
    assert new.key.expires_at is not None
    assert abs(new.key.expires_at - (now + timedelta(days=90))) < timedelta(minutes=1)
    assert old_now.expires_at is not None
    assert abs(old_now.expires_at - (now + timedelta(hours=24))) < timedelta(minutes=1)
    during = Authenticator(keys, clock=at(now + timedelta(hours=23)))
    assert (await during.authenticate(old.token)).key_id == old.key.id
    assert (await during.authenticate(new.token)).key_id == new.key.id
    after = Authenticator(keys, clock=at(now + timedelta(hours=24, minutes=1)))
    with pytest.raises(errors.Unauthenticated, match="expired at"):
        await after.authenticate(old.token)
    assert (await after.authenticate(new.token)).key_id == new.key.id
    # Only an active key can be rotated.
    await keys.revoke("acme", new.key.id, actor=OPERATOR)
    with pytest.raises(errors.InvalidState, match="is revoked: only an active key"):
        await keys.rotate("acme", new.key.id, actor=OPERATOR, grace=timedelta(0))


async def test_rotation_with_no_grace_ends_the_old_key_now(keys: KeyStore) -> None:
    old = await keys.create("acme", "ci", SUBMIT_READ, actor=OPERATOR)
    new, _ = await keys.rotate("acme", old.key.id, actor=OPERATOR, grace=timedelta(0))
    assert new.key.expires_at is None  # the old key never expired
    auth = Authenticator(keys)
    with pytest.raises(errors.Unauthenticated, match="expired at"):
        await auth.authenticate(old.token)
    await auth.authenticate(new.token)


async def test_last_use_is_written_in_a_batch_not_per_call(keys: KeyStore) -> None:
    a = await keys.create("acme", "a", SUBMIT_READ, actor=OPERATOR)
    b = await keys.create("beta", "b", SUBMIT_READ, actor=OPERATOR)
    auth = Authenticator(keys)
    for _ in range(3):
        await auth.authenticate(a.token)
        await auth.authenticate(b.token)
    assert [k.last_used_at for k in await keys.list(None)] == [None, None]
    await auth.flush()
    used = {k.id: k.last_used_at for k in await keys.list(None)}
    assert used[a.key.id] is not None and used[b.key.id] is not None
    await auth.flush()  # nothing pending: no statement


async def test_key_changes_are_in_the_audit_log(keys: KeyStore, pool: Any) -> None:
    made = await keys.create("acme", "ci", (Scope.ADMIN,), actor=OPERATOR)
    new, _ = await keys.rotate("acme", made.key.id, actor=OPERATOR, grace=timedelta(hours=1))
    await keys.revoke("acme", new.key.id, actor=OPERATOR)
    events = await AuditLog(pool).list("acme")
    assert [(e.action, e.target, e.key_name) for e in events] == [
        ("RevokeKey", new.key.id, "cli:tests"),
        ("RotateKey", made.key.id, "cli:tests"),
        ("CreateKey", made.key.id, "cli:tests"),
    ]
    assert events[2].change == {"name": "ci", "scopes": ["admin"], "expires_at": None}
    assert events[1].change["new_key"] == new.key.id
    assert all(made.token not in str(e.change) and new.token not in str(e.change) for e in events)
    assert await AuditLog(pool).list("other") == []


def test_every_key_and_audit_query_matches_on_the_tenant_or_says_why_not() -> None:
    sql = postgres.QUERIES
    # keys.sql and audit.sql (not the claims' keyed_* queries: concurrency keys)
    mine = [name for name in sql if name.startswith(("key_", "keys_", "audit"))]
    assert len(mine) >= 9
    exceptions = {}
    for name in mine:
        query = sql[name]
        reason = re.search(r"^-- tenant: none \((.+)\)$", query.sql, re.MULTILINE)
        if reason:
            exceptions[name] = reason[1]
            continue
        assert any(p.startswith("tenant") for p in query.params), name
        if not re.search(r"^INSERT INTO \w+ \([^)]*\btenant\b", query.sql, re.MULTILINE):
            assert re.search(r"\btenant = \$\d|\.tenant = u\.tenant", query.sql), name
    assert set(exceptions) == {"key_authenticate", "key_list_all", "audit_list_all"}
