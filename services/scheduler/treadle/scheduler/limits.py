"""Submit rate limits and quotas, per tenant and per API key, held across replicas.

Rate limits are token buckets (a rate per second, and a burst: the bucket's
size) whose tokens live in PostgreSQL, one row per bucket (`submit_buckets`),
so that every replica draws on the same ones. A replica never asks the
database per submit: it leases tokens in chunks (a tenth of a second of the
rate, at least 1, at most the burst) with one statement, and serves submits
from its chunk. A replica holds at most one chunk it has not spent, so across
R replicas a tenant's accepted submits over any T seconds stay within
`rate * T + burst + R * chunk` (a fresh bucket: `rate * T + burst`). Tokens a
replica leased are spent or lost with it, never given back: the error is on
the safe side. When the shared bucket runs short, a replica leases again only
once it could hold a chunk again, so a tenant over its rate costs the
database at most about ten statements a second per replica.

A refusal is `ResourceExhausted` with `retry_after`: the seconds after which
the bucket holds what was refused (`retry-after` in the gRPC trailers,
`extensions.retryAfter` in GraphQL; the Python client waits for it when asked).

The quota caps a tenant's waiting tasks (QUEUED, SCHEDULED, RETRYING). Each
replica counts them at most once a second (the `limits` loop, for the tenants
it admitted submits for lately) and adds what it admitted since; so across R
replicas a tenant may pass its quota by what the others accept within about a
second. A quota refusal carries no retry-after: waiting tasks leave only as
they run.

The operator's limits per tenant (`tenant_limits`, `treadle tenants limits`)
are read at start and every `LIMITS_REFRESH` seconds; a change applies within
that. `TREADLE_TENANT_SUBMIT_RATE` and the like are the defaults.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable

from treadle.common.errors import ResourceExhausted, TreadleError
from treadle.scheduler.limits_store import Leased, LimitsStore, TenantLimits
from treadle.scheduler.loops import Backoff, Loop
from treadle.scheduler.principal import Principal
from treadle.scheduler.settings import Settings

log = logging.getLogger("treadle.scheduler.limits")

#: A replica leases this many seconds of a bucket's rate at a time.
CHUNK_SECONDS = 0.1
#: Seconds between counts of a tenant's waiting tasks, for its quota.
QUOTA_REFRESH = 1.0
#: Seconds between reads of the operator's limits.
LIMITS_REFRESH = 5.0
#: A tenant's quota is counted while it submitted within this many seconds;
#: a bucket unused this long is forgotten (with the tokens it held).
IDLE_SECONDS = 60.0
#: The shortest retry-after sent.
MIN_RETRY_AFTER = 0.001


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket's refill rate (tokens per second) and size."""

    rate: float
    burst: int

    @classmethod
    def of(cls, rate: float | None, burst: int | None) -> Rate | None:
        """The bucket for `rate` and `burst` (burst 0 or None: a second's worth,
        at least 1); None when `rate` is 0 or None: no limit."""
        if not rate:
            return None
        return cls(rate, burst or max(1, math.ceil(rate)))

    @property
    def chunk(self) -> int:
        """How many tokens a replica leases at a time."""
        return max(1, min(self.burst, math.ceil(self.rate * CHUNK_SECONDS)))

    def __str__(self) -> str:
        return f"{self.rate:g} submits per second (burst {self.burst})"


@dataclasses.dataclass(frozen=True, slots=True)
class Effective:
    """The limits that apply to one tenant's submits."""

    tenant: Rate | None = None
    key: Rate | None = None
    max_queued: int | None = None

    @property
    def none(self) -> bool:
        return self.tenant is None and self.key is None and not self.max_queued


NO_LIMITS = Effective()


def effective(settings: Settings, own: TenantLimits | None = None) -> Effective:
    """The limits of a tenant: its own where it has them, the defaults else."""

    def pick(mine: float | int | None, default: float | int) -> float | int:
        return default if mine is None else mine

    own = own or TenantLimits("")
    s = settings
    return Effective(
        tenant=Rate.of(
            pick(own.submit_rate, s.tenant_submit_rate),
            int(pick(own.submit_burst, s.tenant_submit_burst)),
        ),
        key=Rate.of(
            pick(own.key_submit_rate, s.key_submit_rate),
            int(pick(own.key_submit_burst, s.key_submit_burst)),
        ),
        max_queued=int(pick(own.max_queued, s.tenant_max_queued)) or None,
    )


LeaseFn = Callable[[int, int], Awaitable[Leased]]


class Bucket:
    """This replica's share of one shared token bucket: the tokens it leased
    and has not spent yet, and when the shared bucket was last found short."""

    def __init__(self, limit: Rate, lease: LeaseFn) -> None:
        self.limit = limit
        self._lease = lease
        #: Tokens on hand.
        self.local = 0
        #: No lease before this (monotonic): the shared bucket was short.
        self._dry_until = 0.0
        #: The shared bucket as of the last lease, and when (monotonic).
        self._level = 0.0
        self._level_at = 0.0
        self._lock = asyncio.Lock()
        self.used_at = time.monotonic()

    async def take(self, need: int, most: int) -> int:
        """Take between `need` and `most` tokens (as many as can be had now, up
        to `most`); 0 when fewer than `need` can. Leases from the shared
        bucket (one statement) when the tokens on hand do not do."""
        self.used_at = time.monotonic()
        if self.local >= most:
            self.local -= most
            return most
        async with self._lock:
            if self.local < most and time.monotonic() >= self._dry_until:
                await self._refill(need, most)
            if self.local < need:
                return 0
            got = min(self.local, most)
            self.local -= got
            return got

    async def _refill(self, need: int, most: int) -> None:
        limit = self.limit
        want = min(limit.burst, max(most - self.local, limit.chunk))
        leased = await self._lease(max(1, need - self.local), want)
        now = time.monotonic()
        self.local += leased.granted
        self._level, self._level_at = leased.tokens, now
        if leased.granted < want:
            # Short: lease again once the shared bucket could fill a chunk.
            self._dry_until = now + max(0.0, limit.chunk - leased.tokens) / limit.rate

    def give_back(self, count: int) -> None:
        """Tokens taken but not used after all (another limit refused)."""
        self.local += count

    def retry_after(self, count: int) -> float:
        """Seconds until `count` more tokens may be had, as this replica sees
        the shared bucket (others may take them first)."""
        now = time.monotonic()
        limit = self.limit
        level = min(limit.burst, self._level + (now - self._level_at) * limit.rate)
        short = (count - self.local - level) / limit.rate
        return max(self._dry_until - now, short, MIN_RETRY_AFTER)


class Quota:
    """A tenant's waiting tasks as this replica knows them: the last count,
    plus what it admitted since that count began."""

    def __init__(self) -> None:
        self.count: int | None = None
        self.since = 0
        self.used_at = time.monotonic()
        #: Held while the first count is read (the first submits wait for it).
        self.counting = asyncio.Lock()

    def waiting(self) -> int:
        assert self.count is not None
        return self.count + self.since


class Admission:
    """Decides whether a caller's submits may be stored now (rate limits and
    quota); built on the shared buckets, counts and the operator's limits."""

    def __init__(self, store: LimitsStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._default = effective(settings)
        #: The tenants the operator gave limits of their own.
        self._own: dict[str, Effective] = {}
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._quotas: dict[str, Quota] = {}

    # -- the operator's limits --------------------------------------------------

    async def load(self) -> None:
        """Read the operator's limits of every tenant."""
        found = await self.store.all()
        own = {t.tenant: effective(self.settings, t) for t in found}
        changed = {
            tenant
            for tenant in own.keys() | self._own.keys()
            if own.get(tenant, self._default) != self._own.get(tenant, self._default)
        }
        self._own = own
        # A tenant whose limits changed starts afresh here: no tokens on hand,
        # no remembered shortage, its quota counted again.
        for key in [k for k in self._buckets if k[0] in changed]:
            del self._buckets[key]
        for tenant in changed:
            self._quotas.pop(tenant, None)

    def limits(self, tenant: str) -> Effective:
        return self._own.get(tenant, self._default)

    # -- admission --------------------------------------------------------------

    async def admit(self, caller: Principal, count: int) -> None:
        """Admit `count` submissions of `caller` together, or refuse them all
        (`ResourceExhausted`, with `retry_after` for a rate limit)."""
        limits = self.limits(caller.tenant)
        if limits.none:
            return
        await self._admit(caller, limits, count, count)

    async def admit_some(
        self, caller: Principal, count: int
    ) -> tuple[int, ResourceExhausted | None]:
        """Admit as many of `count` independent submissions of `caller` as the
        limits allow now, the first ones first: how many, and why the rest are
        refused (None when none is)."""
        limits = self.limits(caller.tenant)
        if limits.none or count == 0:
            return count, None
        try:
            return await self._admit(caller, limits, 1, count)
        except ResourceExhausted as exc:
            return 0, exc

    async def _admit(
        self, caller: Principal, limits: Effective, need: int, most: int
    ) -> tuple[int, ResourceExhausted | None]:
        """Admit between `need` and `most` submissions, or raise: how many, and
        why no more (None when all `most` are)."""
        tenant = caller.tenant
        allowed = most
        refusal: ResourceExhausted | None = None
        quota: Quota | None = None
        if limits.max_queued:
            quota = await self._quota(tenant)
            waiting = quota.waiting()
            room = limits.max_queued - waiting
            if room < need:
                raise ResourceExhausted(
                    f"tenant {tenant!r} has {waiting} tasks waiting to run (QUEUED, SCHEDULED "
                    f"or RETRYING) and a quota of {limits.max_queued}: {need} more refused"
                )
            if room < allowed:
                allowed = room
                refusal = ResourceExhausted(
                    f"tenant {tenant!r} reached its quota of {limits.max_queued} tasks "
                    "waiting to run"
                )
        taken: list[Bucket] = []
        for bucket, whose in self._buckets_of(caller, limits):
            limit = bucket.limit
            if need > limit.burst:
                self._give_back(taken, allowed)
                raise ResourceExhausted(
                    f"{need} submissions at once exceed the burst of {whose} ({limit}): "
                    f"submit at most {limit.burst} at once"
                )
            got = await bucket.take(need, allowed)
            if got == 0:
                self._give_back(taken, allowed)
                wait = bucket.retry_after(need)
                raise ResourceExhausted(
                    f"{whose} may submit {limit}: {need} more refused; try again in {wait:.3g} s",
                    retry_after=wait,
                )
            if got < allowed:
                self._give_back(taken, allowed - got)
                allowed = got
                wait = bucket.retry_after(1)
                refusal = ResourceExhausted(
                    f"{whose} may submit {limit}: refused; try again in {wait:.3g} s",
                    retry_after=wait,
                )
            taken.append(bucket)
        if quota is not None:
            quota.since += allowed
        return allowed, refusal

    @staticmethod
    def _give_back(taken: list[Bucket], count: int) -> None:
        for bucket in taken:
            bucket.give_back(count)

    def _buckets_of(self, caller: Principal, limits: Effective) -> list[tuple[Bucket, str]]:
        """The caller's buckets, its key's first: (bucket, whose, in words)."""
        found = []
        if limits.key is not None and caller.key_id:
            name = caller.key_name or caller.key_id
            found.append((self._bucket(caller.tenant, caller.key_id, limits.key), f"key {name!r}"))
        if limits.tenant is not None:
            found.append(
                (self._bucket(caller.tenant, "", limits.tenant), f"tenant {caller.tenant!r}")
            )
        return found

    def _bucket(self, tenant: str, subject: str, limit: Rate) -> Bucket:
        bucket = self._buckets.get((tenant, subject))
        if bucket is None or bucket.limit != limit:

            async def lease(need: int, want: int) -> Leased:
                return await self.store.lease(tenant, subject, limit.rate, limit.burst, need, want)

            bucket = self._buckets[(tenant, subject)] = Bucket(limit, lease)
        return bucket

    async def _quota(self, tenant: str) -> Quota:
        quota = self._quotas.get(tenant)
        if quota is None:
            quota = self._quotas[tenant] = Quota()
        quota.used_at = time.monotonic()
        if quota.count is None:
            async with quota.counting:  # the first submit of a tenant waits for its count
                if quota.count is None:
                    await self._count(tenant, quota)
        return quota

    async def _count(self, tenant: str, quota: Quota) -> None:
        before = quota.since
        count = await self.store.count_waiting(tenant)
        quota.count, quota.since = count, quota.since - before

    # -- the loop ---------------------------------------------------------------

    def loops(self) -> dict[str, Loop]:
        return {"limits": self.run}

    async def run(self) -> None:
        """Count the waiting tasks of the tenants with a quota that submitted
        lately (every QUOTA_REFRESH seconds), read the operator's limits
        (every LIMITS_REFRESH), forget idle buckets, and prune ended start
        windows (every prune interval)."""
        backoff = Backoff(log)
        loaded_at = pruned_at = time.monotonic()
        while True:
            await asyncio.sleep(QUOTA_REFRESH)
            now = time.monotonic()
            try:
                for tenant, quota in list(self._quotas.items()):
                    if now - quota.used_at > IDLE_SECONDS:
                        del self._quotas[tenant]
                    elif self.limits(tenant).max_queued:
                        await self._count(tenant, quota)
                if now - loaded_at >= LIMITS_REFRESH:
                    await self.load()
                    loaded_at = now
                    idle = [k for k, b in self._buckets.items() if now - b.used_at > IDLE_SECONDS]
                    for key in idle:
                        del self._buckets[key]
                if now - pruned_at >= self.settings.prune_interval:
                    await self.store.prune_starts()
                    pruned_at = now
            except TreadleError as exc:
                await backoff.failed("limits", exc)
                continue
            backoff.ok()
