"""The audit log: what admins did, who did it, when, and what changed.

A row is written for every key made, revoked or rotated (`treadle.scheduler.keys`,
in the same transaction as the change) and after every admin call that changed
something (`treadle.scheduler.auth`, once the call succeeded). Rows are never
updated; `treadle audit` and the `ListAuditEvents` call read them, newest first.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from treadle.common.audit import AuditEvent
from treadle.common.errors import InvalidArgument
from treadle.scheduler import postgres
from treadle.scheduler.principal import Principal

#: Events per page when the caller does not say, and the most it may ask for.
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


async def insert(
    conn: Any,
    actor: Principal,
    action: str,
    target: str,
    change: Mapping[str, Any],
    tenant: str | None = None,
) -> None:
    """Record one action on `conn` (inside the caller's transaction, if any), in
    `tenant` (default: the actor's)."""
    await postgres.execute(
        conn,
        "audit_insert",
        tenant=actor.tenant if tenant is None else tenant,
        key_id=actor.key_id,
        key_name=actor.key_name,
        action=action,
        target=target,
        change=json.dumps(change, default=_encode),
    )


def _encode(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def cursor_from_token(token: str) -> int | None:
    """The event id a page token stands for (events older than it come next)."""
    if not token:
        return None
    try:
        return int(token)
    except ValueError:
        raise InvalidArgument(f"page_token {token[:40]!r} is not one this server gave") from None


def check_limit(limit: int | None) -> int:
    if limit is None or limit == 0:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be 1 .. {MAX_LIMIT}, got {limit}")
    return limit


class AuditLog(postgres.PoolStore):
    """Writes and reads `audit_events`."""

    async def record(
        self, actor: Principal, action: str, target: str, change: Mapping[str, Any]
    ) -> None:
        """Record one action of `actor`, in its tenant."""
        async with postgres.acquired(self.pool) as conn:
            await insert(conn, actor, action, target, change)

    async def list(
        self, tenant: str | None, limit: int | None = None, before: int | None = None
    ) -> builtins.list[AuditEvent]:
        """`tenant`'s events (None: every tenant's), newest first, at most
        `limit`, older than event id `before` when given."""
        count = check_limit(limit)
        if tenant is None:
            rows = await self._fetch("audit_list_all", before=before, limit=count)
        else:
            rows = await self._fetch("audit_list", tenant=tenant, before=before, limit=count)
        return [
            postgres.from_row(AuditEvent, row, change=json.loads(row["change"])) for row in rows
        ]
