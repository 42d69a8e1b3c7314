"""API keys: made, listed, revoked and rotated (`KeyStore`), and checked on
every call (`Authenticator`).

A key's token is `trdl_<id>_<secret>`: 16 hex digits of public lookup id and 64
hex digits (256 random bits) of secret. The recognisable `trdl_` prefix lets
secret scanners find leaked tokens. The token is shown once, when the key is
made; the database keeps only its SHA-256 hash (why a fast hash is right for
such tokens: sql/migrations/0009_keys_audit.sql), compared in constant time
(`hmac.compare_digest`).

Checking a key costs no database round trip on most calls: a replica keeps
each key's row, once looked up, for `CACHE_SECONDS`. So a revoked key is
refused by every replica within that time, not at once (an expired one at
once: the expiry time is in the cached row). When a key was last used is
written at most once per `LAST_USED_INTERVAL` per replica, in one statement
for every key used, off the calls' path.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from treadle.common import errors
from treadle.scheduler import audit, postgres
from treadle.scheduler.loops import Clock, Loop, utcnow
from treadle.scheduler.principal import Principal, Scope

log = logging.getLogger("treadle.scheduler.keys")

#: What every token starts with.
PREFIX = "trdl_"
_TOKEN = re.compile(r"trdl_([0-9a-f]{16})_([0-9a-f]{64})")
#: Seconds a replica trusts a key's row once looked up: a revocation reaches
#: every replica within this.
CACHE_SECONDS = 5.0
#: Seconds between a replica's writes of `last_used_at` (one statement for all keys).
LAST_USED_INTERVAL = 60.0
#: Seconds the last write of `last_used_at` may take when the replica stops.
FINAL_FLUSH_TIMEOUT = 2.0
#: Tenants are named like this (a key's tenant is checked when the key is made).
_TENANT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
MAX_NAME = 100
#: The scopes in the order they are shown.
SCOPE_ORDER = (Scope.SUBMIT, Scope.READ, Scope.ADMIN)

#: The columns a key's row is read with (not the hash).
_Row = Mapping[str, Any]


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def key_id_of(token: str) -> str:
    """The lookup id of a well-formed token; `Unauthenticated` for anything else."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise errors.Unauthenticated(
            "malformed API key: expected trdl_ followed by 16 and 64 hex digits "
            "(trdl_<id>_<secret>, as `treadle keys create` prints it)"
        )
    return match[1]


def parse_scopes(text: str | Iterable[str]) -> tuple[Scope, ...]:
    """Scopes from `submit,read` (or a list of names), in `SCOPE_ORDER`."""
    names = text.split(",") if isinstance(text, str) else list(text)
    wanted = {n.strip().lower() for n in names if n.strip()}
    unknown = sorted(wanted - {s.value for s in Scope})
    if unknown or not wanted:
        raise errors.InvalidArgument(
            f"scopes must be one or more of {', '.join(s.value for s in SCOPE_ORDER)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    return tuple(s for s in SCOPE_ORDER if s.value in wanted)


def check_tenant(tenant: str) -> str:
    if not _TENANT.fullmatch(tenant):
        raise errors.InvalidArgument(
            f"tenant must be 1 to 63 lower-case letters, digits, '_', '.' or '-', "
            f"starting with a letter or digit; got {tenant!r}"
        )
    return tenant


def _check_name(name: str) -> str:
    if not name.strip() or len(name) > MAX_NAME or not name.isprintable():
        raise errors.InvalidArgument(f"a key's name must be 1 to {MAX_NAME} printable characters")
    return name


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """A stored key (never its secret)."""

    id: str
    tenant: str
    name: str
    scopes: tuple[Scope, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_from: str | None
    #: The id of the first key of its rotation chain (its own id if it replaced none).
    lineage: str

    @property
    def prefix(self) -> str:
        """The token's public start, `trdl_<id>`: how people and logs name the key."""
        return f"{PREFIX}{self.id}"

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_json(self, now: datetime) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for field in ("created_at", "expires_at", "revoked_at", "last_used_at"):
            value = data[field]
            data[field] = value.isoformat() if value is not None else None
        data["scopes"] = [s.value for s in self.scopes]
        data["prefix"] = self.prefix
        data["status"] = self.status(now)
        return data


def _key(row: _Row) -> ApiKey:
    return postgres.from_row(ApiKey, row, scopes=parse_scopes(row["scopes"]))


@dataclasses.dataclass(frozen=True)
class NewKey:
    """A key just made, and its token: the only time the token is known."""

    token: str
    key: ApiKey


def _new_token() -> tuple[str, str]:
    """A fresh (lookup id, token). Ids are 64 random bits: a collision would
    fail the insert (ALREADY_EXISTS), once in billions of keys."""
    key_id = secrets.token_hex(8)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_hex(32)}"


class KeyStore(postgres.PoolStore):
    """Keys in `api_keys`; every change is written to the audit log in the
    same transaction, as done by `actor`."""

    def __init__(self, pool: postgres.Pool, clock: Clock = utcnow) -> None:
        super().__init__(pool)
        self.clock = clock

    async def _insert(
        self,
        conn: Any,
        tenant: str,
        name: str,
        scopes: tuple[Scope, ...],
        expires_at: datetime | None,
        rotated_from: str | None = None,
        lineage: str | None = None,
    ) -> NewKey:
        key_id, token = _new_token()
        row = (
            await postgres.fetch(
                conn,
                "key_insert",
                id=key_id,
                tenant=tenant,
                name=name,
                secret_hash=token_hash(token),
                scopes=[s.value for s in scopes],
                expires_at=expires_at,
                rotated_from=rotated_from,
                lineage=lineage or key_id,
            )
        )[0]
        return NewKey(token, _key(row))

    async def create(
        self,
        tenant: str,
        name: str,
        scopes: Iterable[Scope],
        *,
        actor: Principal,
        expires_at: datetime | None = None,
    ) -> NewKey:
        """Make a key for `tenant`; the token comes back here and never again."""
        check_tenant(tenant)
        _check_name(name)
        wanted = parse_scopes(s.value for s in scopes)
        if expires_at is not None and expires_at <= self.clock():
            raise errors.InvalidArgument("a key's expiry must be in the future")
        async with postgres.acquired(self.pool) as conn, conn.transaction():
            made = await self._insert(conn, tenant, name, wanted, expires_at)
            change = {"name": name, "scopes": [s.value for s in wanted], "expires_at": expires_at}
            await audit.insert(conn, actor, "CreateKey", made.key.id, change, tenant=tenant)
        return made

    async def list(self, tenant: str | None) -> builtins.list[ApiKey]:
        """`tenant`'s keys (None: every tenant's), oldest first."""
        if tenant is None:
            rows = await self._fetch("key_list_all")
        else:
            rows = await self._fetch("key_list", tenant=tenant)
        return [_key(row) for row in rows]

    async def revoke(self, tenant: str, key_id: str, *, actor: Principal) -> ApiKey:
        """Refuse the key from now on (on every replica within `CACHE_SECONDS`)."""
        async with postgres.acquired(self.pool) as conn, conn.transaction():
            rows = await postgres.fetch(conn, "key_revoke", tenant=tenant, id=_bare(key_id))
            if not rows:
                raise _not_found(tenant, key_id)
            key = _key(rows[0])
            await audit.insert(conn, actor, "RevokeKey", key.id, {"name": key.name}, tenant=tenant)
        return key

    async def rotate(
        self,
        tenant: str,
        key_id: str,
        *,
        actor: Principal,
        grace: timedelta,
        expires_at: datetime | None = None,
    ) -> tuple[NewKey, ApiKey]:
        """Make a key with the old one's name and scopes, and let the old one
        expire `grace` from now: both work until then. The new key expires at
        `expires_at`, or, when none is given, after as long as the old one was
        made to last (never, if it never expired). Returns the new key and the
        old one as it now is."""
        if grace < timedelta(0):
            raise errors.InvalidArgument("the grace period must not be negative")
        now = self.clock()
        async with postgres.acquired(self.pool) as conn, conn.transaction():
            rows = await postgres.fetch(conn, "key_lock", tenant=tenant, id=_bare(key_id))
            if not rows:
                raise _not_found(tenant, key_id)
            old = _key(rows[0])
            if old.status(now) != "active":
                raise errors.InvalidState(
                    f"API key {old.prefix} is {old.status(now)}: only an active key can be "
                    "rotated (make a new one with `treadle keys create`)"
                )
            if expires_at is None and old.expires_at is not None:
                expires_at = now + (old.expires_at - old.created_at)
            made = await self._insert(
                conn, tenant, old.name, old.scopes, expires_at, old.id, old.lineage
            )
            expired = await postgres.fetch(
                conn, "key_expire", tenant=tenant, id=old.id, expires_at=now + grace
            )
            old = _key(expired[0])
            change = {
                "name": old.name,
                "new_key": made.key.id,
                "old_expires_at": old.expires_at,
                "new_expires_at": made.key.expires_at,
            }
            await audit.insert(conn, actor, "RotateKey", old.id, change, tenant=tenant)
        return made, old

    async def find(self, key_id: str) -> _Row | None:
        """The row authentication reads (with the secret's hash), by lookup id."""
        rows = await self._fetch("key_authenticate", id=key_id)
        return rows[0] if rows else None

    async def touch(self, used: Mapping[str, tuple[str, datetime]]) -> None:
        """Record when keys were last used: key id -> (tenant, time)."""
        ids = builtins.list(used)
        await self._execute(
            "keys_touch",
            tenants=[used[i][0] for i in ids],
            ids=ids,
            used_ats=[used[i][1] for i in ids],
        )


def _bare(key_id: str) -> str:
    """A key id as given by a person: `trdl_<id>` or the id alone."""
    return key_id.removeprefix(PREFIX)


def _not_found(tenant: str, key_id: str) -> errors.NotFound:
    return errors.NotFound(f"no API key {PREFIX}{_bare(key_id)} in tenant {tenant!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    """A key's row as authentication needs it, and when it was read (monotonic)."""

    secret_hash: bytes
    principal: Principal
    expires_at: datetime | None
    revoked_at: datetime | None
    read_at: float


class Authenticator:
    """Turns a call's token into its `Principal`, or refuses it with
    `Unauthenticated` (malformed, unknown, revoked or expired; the message
    says which, never quoting the secret)."""

    def __init__(
        self,
        keys: KeyStore,
        clock: Clock = utcnow,
        cache_seconds: float = CACHE_SECONDS,
        last_used_interval: float = LAST_USED_INTERVAL,
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.last_used_interval = last_used_interval
        self._cache: dict[str, _Entry] = {}
        #: Look-ups in flight, shared by the calls that need the same key.
        self._reading: dict[str, asyncio.Future[_Entry | None]] = {}
        #: Keys used since the last write: id -> last use (epoch seconds).
        self._used: dict[str, float] = {}

    async def authenticate(self, token: str) -> Principal:
        """The caller `token` stands for. Every call of a replica comes here:
        what a call with a cached key allocates is kept to a few objects."""
        key_id = key_id_of(token)
        entry = self._cache.get(key_id)
        if entry is None or asyncio.get_running_loop().time() - entry.read_at > self.cache_seconds:
            entry = await self._read(key_id)
        if entry is None or not hmac.compare_digest(token_hash(token), entry.secret_hash):
            raise errors.Unauthenticated(
                f"API key {PREFIX}{key_id} is not valid: no such key, or its secret does not match"
            )
        principal = entry.principal
        if entry.revoked_at is not None:
            raise errors.Unauthenticated(
                f"API key {PREFIX}{key_id} ({principal.key_name}) was revoked at "
                f"{entry.revoked_at.isoformat()}"
            )
        if entry.expires_at is not None and entry.expires_at <= self.clock():
            raise errors.Unauthenticated(
                f"API key {PREFIX}{key_id} ({principal.key_name}) expired at "
                f"{entry.expires_at.isoformat()}"
            )
        self._used[key_id] = time.time()
        return principal

    async def _read(self, key_id: str) -> _Entry | None:
        """The key's row, read once however many calls wait for it."""
        reading = self._reading.get(key_id)
        if reading is None:
            reading = asyncio.ensure_future(self._fetch(key_id))
            self._reading[key_id] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key_id, None))
        # One caller going away must not cancel the read the others wait for.
        return await asyncio.shield(reading)

    async def _fetch(self, key_id: str) -> _Entry | None:
        row = await self.keys.find(key_id)
        if row is None:
            self._cache.pop(key_id, None)
            return None
        entry = _Entry(
            secret_hash=bytes(row["secret_hash"]),
            principal=Principal(
                tenant=row["tenant"],
                scopes=frozenset(parse_scopes(row["scopes"])),
                key_id=row["id"],
                key_name=row["name"],
                lineage=row["lineage"],
            ),
            expires_at=postgres.finite_time(row["expires_at"]),
            revoked_at=row["revoked_at"],
            read_at=asyncio.get_running_loop().time(),
        )
        self._cache[key_id] = entry
        return entry

    # -- last used --------------------------------------------------------------

    def loops(self) -> dict[str, Loop]:
        return {"keys-last-used": self.run}

    async def run(self) -> None:
        """Write when keys were last used every `last_used_interval`, and once
        more when cancelled (the replica stops). A failed write is kept for the
        next round."""
        try:
            while True:
                await asyncio.sleep(self.last_used_interval)
                try:
                    await self.flush()
                except errors.TreadleError as exc:
                    log.warning("recording when API keys were last used failed: %s", exc)
        except asyncio.CancelledError:
            if self._used:
                with contextlib.suppress(errors.TreadleError, TimeoutError):
                    async with asyncio.timeout(FINAL_FLUSH_TIMEOUT):
                        await self.flush()
            raise

    async def flush(self) -> None:
        """Write the pending last-used times now (one statement)."""
        used, self._used = self._used, {}
        # A key's tenant is in its cached row (a key whose row is gone is left out).
        rows = {key_id: self._cache.get(key_id) for key_id in used}
        touched = {
            key_id: (entry.principal.tenant, datetime.fromtimestamp(used[key_id], UTC))
            for key_id, entry in rows.items()
            if entry is not None
        }
        if not touched:
            return
        try:
            await self.keys.touch(touched)
        except BaseException:
            for key_id, seen in used.items():
                self._used.setdefault(key_id, seen)
            raise
