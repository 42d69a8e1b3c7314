"""The statements behind submit rate limits and quotas (`sql/limits.sql`,
tables in `migrations/0010_limits.sql`): the shared token buckets, a tenant's
waiting tasks, the operator's limits per tenant, and the upkeep of start
windows. None runs per submit (`treadle.scheduler.limits` says when each runs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime

from treadle.common.errors import InvalidArgument
from treadle.scheduler import postgres

#: The limits an operator sets per tenant (columns of tenant_limits).
LIMIT_FIELDS = ("submit_rate", "submit_burst", "key_submit_rate", "key_submit_burst", "max_queued")


@dataclasses.dataclass(frozen=True)
class TenantLimits:
    """One tenant's limits as the operator set them; None takes the replicas'
    default (TREADLE_TENANT_SUBMIT_RATE, ...), 0 is no limit."""

    tenant: str
    #: Submits per second, and the largest burst (the bucket's size).
    submit_rate: float | None = None
    submit_burst: int | None = None
    #: The same for each API key of the tenant.
    key_submit_rate: float | None = None
    key_submit_burst: int | None = None
    #: Waiting (QUEUED, SCHEDULED, RETRYING) tasks at most.
    max_queued: int | None = None
    updated_at: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Leased:
    """What a lease took from a shared bucket, and what the bucket holds now."""

    granted: int
    tokens: float


def check_limits(values: Mapping[str, float | int | None]) -> None:
    """Each value a finite number, not negative (None: the default)."""
    for name, value in values.items():
        if name not in LIMIT_FIELDS:
            raise InvalidArgument(f"unknown limit {name!r}; limits: {', '.join(LIMIT_FIELDS)}")
        if value is None:
            continue
        if not value >= 0 or value == float("inf"):
            raise InvalidArgument(f"{name} must be a finite number, 0 or more, got {value}")
        if name != "submit_rate" and name != "key_submit_rate" and value != int(value):
            raise InvalidArgument(f"{name} must be a whole number, got {value}")
        if name in ("submit_burst", "key_submit_burst") and value >= 2**31:
            raise InvalidArgument(f"{name} must be less than {2**31}, got {value}")


class LimitsStore(postgres.PoolStore):
    async def lease(
        self, tenant: str, subject: str, rate: float, burst: int, need: int, want: int
    ) -> Leased:
        """Take up to `want` tokens from the shared bucket of `tenant` (`subject`:
        '' for the tenant's own, a key's id for the key's), when it holds at
        least `need`; one statement."""
        rows = await self._fetch(
            "lease_submit_tokens",
            tenant=tenant,
            subject=subject,
            rate=rate,
            burst=burst,
            need=need,
            want=want,
        )
        return Leased(rows[0]["granted"], rows[0]["tokens"])

    async def count_waiting(self, tenant: str) -> int:
        """`tenant`'s QUEUED, SCHEDULED and RETRYING tasks."""
        count: int = await self._fetchval("count_waiting", tenant=tenant)
        return count

    async def all(self) -> list[TenantLimits]:
        """Every tenant's limits the operator set, by tenant."""
        return [postgres.from_row(TenantLimits, r) for r in await self._fetch("all_tenant_limits")]

    async def set(self, tenant: str, values: Mapping[str, float | int | None]) -> TenantLimits:
        """Set the limits in `values` (None: back to the default) for `tenant`;
        the others stay as they are."""
        check_limits(values)
        rows = await self._fetch(
            "set_tenant_limits",
            tenant=tenant,
            submit_rate=_float(values.get("submit_rate")),
            submit_burst=_int(values.get("submit_burst")),
            key_submit_rate=_float(values.get("key_submit_rate")),
            key_submit_burst=_int(values.get("key_submit_burst")),
            max_queued=_int(values.get("max_queued")),
            given=sorted(values),
        )
        return postgres.from_row(TenantLimits, rows[0])

    async def clear(self, tenant: str) -> bool:
        """`tenant` back to the defaults; False when it had no limits of its own."""
        return bool(await self._fetch("clear_tenant_limits", tenant=tenant))

    async def prune_starts(self) -> int:
        """Forget the start counts of windows that have ended."""
        return postgres.affected(await self._execute("prune_queue_starts"))


def _float(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def _int(value: float | int | None) -> int | None:
    return None if value is None else int(value)
