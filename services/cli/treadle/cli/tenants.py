"""`treadle tenants limits ...`: each tenant's submit rate limits and quota.

These talk to the database directly, as `treadle migrate` does (with
TREADLE_DATABASE_URL / --database-url and TREADLE_DATABASE_SCHEMA /
--database-schema); every replica reads the limits again within
`limits.LIMITS_REFRESH` seconds. A limit a tenant has no value of its own for
is the replicas' default (TREADLE_TENANT_SUBMIT_RATE, ...).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from treadle.common import config, process
from treadle.common.errors import InvalidArgument
from treadle.scheduler.settings import Settings as SchedulerSettings

if TYPE_CHECKING:  # asyncpg is not needed to parse arguments
    from treadle.scheduler.limits_store import LimitsStore, TenantLimits

#: What a limit may be set to besides a number: back to the replicas' default.
DEFAULT = "default"
#: Each limit's flag, and the column it sets.
FLAGS = {
    "--submit-rate": "submit_rate",
    "--burst": "submit_burst",
    "--key-submit-rate": "key_submit_rate",
    "--key-burst": "key_submit_burst",
    "--max-queued": "max_queued",
}
EPILOG = """\
examples:
  treadle tenants limits set acme --submit-rate 100 --burst 200 --max-queued 100000
  treadle tenants limits set acme --key-submit-rate 20     # each of acme's API keys
  treadle tenants limits set acme --burst default           # back to TREADLE_TENANT_SUBMIT_BURST
  treadle tenants limits list --json
  treadle tenants limits clear acme                        # every limit back to the defaults

A rate is submits per second (0: no limit); a burst, the most submits at once
(0: a second's worth of the rate); --max-queued, the most QUEUED, SCHEDULED and
RETRYING tasks (0: no limit). Replicas apply a change within 5 seconds
(docs/security.md#rate-limits-and-quotas).
"""

AddDatabase = Callable[[argparse.ArgumentParser], None]


def _limit(text: str) -> float | str:
    if text.strip().lower() == DEFAULT:
        return DEFAULT
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'default'") from None


def add_parser(sub: Any) -> None:
    """Add `tenants limits` and its actions to the `treadle` parser."""
    tenants = sub.add_parser(
        "tenants",
        help="each tenant's submit rate limits and quota (database access)",
        description="Manage tenants, talking to the database directly.",
    )
    nouns = tenants.add_subparsers(dest="tenants_command", required=True, metavar="NOUN")
    limits = nouns.add_parser(
        "limits",
        help="set, list or clear a tenant's submit rate limits and quota",
        description="A tenant's submit rate limits (its own, and each of its API keys') "
        "and its quota of waiting tasks; what a tenant has no value of its own for is "
        "the replicas' default (TREADLE_TENANT_SUBMIT_RATE, ...).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = limits.add_subparsers(dest="limits_command", required=True, metavar="ACTION")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name,
            help=text,
            description=text[0].upper() + text[1:] + ".",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
        config.add_flags(parser.add_argument_group("database"), SchedulerSettings, "database")
        return parser

    change = action("set", "set some of a tenant's limits; the others stay as they are")
    change.add_argument("tenant", help="the tenant")
    helps = {
        "--submit-rate": "the tenant's submits per second (0: no limit)",
        "--burst": "the most submits at once (0: a second's worth of the rate)",
        "--key-submit-rate": "each API key's submits per second (0: no limit)",
        "--key-burst": "each API key's most submits at once",
        "--max-queued": "the most QUEUED + SCHEDULED + RETRYING tasks (0: no limit)",
    }
    for flag, column in FLAGS.items():
        change.add_argument(
            flag, dest=column, type=_limit, help=f"{helps[flag]}; 'default': the replicas'"
        )
    action("list", "list the tenants with limits of their own")
    clear = action("clear", "put every limit of a tenant back to the defaults")
    clear.add_argument("tenant", help="the tenant")


def limits_dict(limits: TenantLimits) -> dict[str, Any]:
    return {
        "tenant": limits.tenant,
        **{column: getattr(limits, column) for column in FLAGS.values()},
        "updated_at": limits.updated_at.isoformat() if limits.updated_at else None,
    }


def _shown(limits: TenantLimits) -> str:
    values = []
    for flag, column in FLAGS.items():
        value = getattr(limits, column)
        values.append(f"{flag.removeprefix('--')}={DEFAULT if value is None else f'{value:g}'}")
    return f"{limits.tenant}: {' '.join(values)}"


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Carry out one `treadle tenants limits` action."""
    from treadle.scheduler.embedded import database

    settings = config.load(SchedulerSettings, env, vars(args))
    action: str = args.limits_command
    values: dict[str, float | int | None] = {}
    if action == "set":
        for column in FLAGS.values():
            given = getattr(args, column)
            if given is not None:
                values[column] = None if given == DEFAULT else given
        if not values:
            raise InvalidArgument(f"say which limits to set: {', '.join(FLAGS)}")

    async def act(store: LimitsStore) -> str:
        if action == "list":
            found = await store.all()
            if args.json:
                return json.dumps([limits_dict(t) for t in found], indent=2)
            return "\n".join(_shown(t) for t in found) or "no tenant has limits of its own"
        if action == "clear":
            cleared = await store.clear(args.tenant)
            if args.json:
                return json.dumps({"tenant": args.tenant, "cleared": cleared})
            return f"{args.tenant}: every limit is the default" + ("" if cleared else " already")
        updated = await store.set(args.tenant, values)
        return json.dumps(limits_dict(updated), indent=2) if args.json else _shown(updated)

    async def with_store(url: str) -> str:
        from treadle.scheduler import postgres
        from treadle.scheduler.limits_store import LimitsStore

        pool = await postgres.create_pool(url, settings.database_schema, 1, "treadle-tenants")
        try:
            async with postgres.acquired(pool) as conn:
                await postgres.check_schema(conn)  # Unavailable: run `treadle migrate`
            return await act(LimitsStore(pool))
        finally:
            await postgres.close_pool(pool)

    with database(settings.database_url, settings.data_dir) as url:
        print(process.run_async(with_store(url)))
    return 0
