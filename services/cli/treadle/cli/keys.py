"""`treadle keys ...` (make, list, revoke and rotate API keys) and `treadle
audit` (read the audit log).

They talk to the database directly, as `treadle migrate` does (the first key
must be made before any key exists), with TREADLE_DATABASE_URL /
--database-url and TREADLE_DATABASE_SCHEMA / --database-schema. What they
change is recorded in the audit log as done by `cli:<operating-system user>`.
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from treadle.cli._duration import parse_duration
from treadle.cli._table import table
from treadle.common import config, process
from treadle.common.errors import InvalidArgument
from treadle.scheduler.principal import ALL_SCOPES, DEFAULT_TENANT, Principal
from treadle.scheduler.settings import Settings as SchedulerSettings

if TYPE_CHECKING:  # imported when a command runs: asyncpg is not needed to parse arguments
    from treadle.scheduler.keys import ApiKey, NewKey
    from treadle.scheduler.postgres import Pool

T = TypeVar("T")
AddDatabase = Callable[[argparse.ArgumentParser], None]

KEYS_EPILOG = """\
examples:
  treadle keys create --tenant acme --scope submit,read --expires 90d --name ci-deploy
  treadle keys list --tenant acme
  treadle keys rotate trdl_1f2e3d4c5b6a7988 --tenant acme --grace 24h
  treadle keys revoke trdl_1f2e3d4c5b6a7988 --tenant acme
  treadle keys list --json | jq '.[] | select(.status == "active")'

Scopes: submit (submit tasks, read the tasks the key submitted), read (read
tasks, queues, schedules, statistics), admin (everything: queues, schedules,
cancel, retry, the audit log). Send a key as `authorization: Bearer <token>`:
TREADLE_API_KEY or --api-key for the treadle command, Client(api_key=...) in
Python. The scheduler checks keys when TREADLE_AUTH=keys (docs/security.md).
"""

AUDIT_EPILOG = """\
examples:
  treadle audit                        # the latest 50 events of every tenant
  treadle audit --tenant acme --limit 200
  treadle audit --json | jq '.[] | select(.action == "RevokeKey")'
"""


def add_parsers(sub: Any, add_database: AddDatabase) -> None:
    """Add `keys` (and its actions) and `audit` to the `treadle` parser."""
    keys = sub.add_parser(
        "keys",
        help="create, list, revoke or rotate API keys (database access)",
        description="Manage API keys, talking to the database directly. A key's token "
        "is shown once, when it is made; Treadle keeps only a hash of it.",
        epilog=KEYS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    def action(name: str, text: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name,
            help=text,
            description=description,
            epilog=KEYS_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
        add_database(parser)
        return parser

    def tenant(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--tenant", default=DEFAULT_TENANT, help=f"the key's tenant (default {DEFAULT_TENANT})"
        )

    create = action(
        "create", "make a key and print its token once", "Make an API key; print its token once."
    )
    tenant(create)
    create.add_argument(
        "--scope",
        required=True,
        help="what the key may do: submit, read, admin, comma-separated (submit,read)",
    )
    create.add_argument("--name", default="unnamed", help="what the key is for, e.g. ci-deploy")
    create.add_argument("--expires", help="lifetime, e.g. 90d, 12h (default: never expires)")

    listing = action("list", "list keys (never their tokens)", "List API keys, oldest first.")
    listing.add_argument("--tenant", help="only this tenant's keys (default: every tenant's)")

    revoke = action(
        "revoke",
        "refuse a key from now on",
        "Revoke an API key: every replica refuses it within seconds (its cache).",
    )
    revoke.add_argument("key", help="the key's id: trdl_<id> as `keys list` shows it")
    tenant(revoke)

    rotate = action(
        "rotate",
        "make a replacement key; the old one works for a grace period",
        "Make a new key with the old one's name and scopes, and print its token once; "
        "the old key keeps working until the grace period ends, then expires.",
    )
    rotate.add_argument("key", help="the key's id: trdl_<id> as `keys list` shows it")
    tenant(rotate)
    rotate.add_argument(
        "--grace", default="24h", help="how long the old key still works (default 24h)"
    )
    rotate.add_argument(
        "--expires", help="the new key's lifetime (default: as long as the old one's)"
    )

    audit_parser = sub.add_parser(
        "audit",
        help="show the audit log (database access)",
        description="Show what admins did, newest first: keys made, revoked and rotated, "
        "and admin calls that changed something (queues, schedules, cancel, retry).",
        epilog=AUDIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    audit_parser.add_argument(
        "--tenant", help="only this tenant's events (default: every tenant's)"
    )
    audit_parser.add_argument(
        "--limit", type=int, default=50, help="events shown, at most 1000 (default 50)"
    )
    audit_parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    add_database(audit_parser)


def _operator(tenant: str) -> Principal:
    """Who a change made here is recorded as: `cli:<user>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid, and none in the environment
        user = "unknown"
    return Principal(tenant, ALL_SCOPES, key_name=f"cli:{user}")


def _with_pool(
    args: argparse.Namespace,
    env: Mapping[str, str],
    act: Callable[[Pool], Awaitable[T]],
    migrate: bool,
) -> T:
    """`act` on a small pool to the installation's schema, migrated first
    (`migrate`: a change may be the very first thing done to a database) or
    checked to be up to date."""
    from treadle.scheduler import postgres
    from treadle.scheduler.embedded import database

    sched = config.load(SchedulerSettings, env, vars(args))

    async def run(url: str) -> T:
        pool = await postgres.create_pool(url, sched.database_schema, 2, "treadle-keys")
        try:
            async with postgres.acquired(pool) as conn:
                if migrate:
                    await postgres.migrate(conn, sched.database_schema)
                else:
                    await postgres.check_schema(conn)
            return await act(pool)
        finally:
            await postgres.close_pool(pool)

    with database(sched.database_url, sched.data_dir) as url:
        return process.run_async(run(url))


def _now() -> datetime:
    return datetime.now(UTC)


def _when(value: datetime | None, never: str = "-") -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else never


def _made(made: NewKey, as_json: bool, old: ApiKey | None = None) -> str:
    key, now = made.key, _now()
    if as_json:
        data: dict[str, Any] = {"token": made.token, "key": key.to_json(now)}
        if old is not None:
            data["old_key"] = old.to_json(now)
        return json.dumps(data, indent=2)
    lines = [
        f"Made API key {key.prefix} ({key.name}) in tenant {key.tenant}: scopes "
        f"{', '.join(s.value for s in key.scopes)}; expires {_when(key.expires_at, 'never')}.",
    ]
    if old is not None:
        lines.append(
            f"It replaces {old.prefix}, which keeps working until {_when(old.expires_at)}."
        )
    lines += [
        "Its token, shown this once (Treadle keeps only a hash; store it in a secret manager):",
        "",
        f"  {made.token}",
        "",
        "Send it as `authorization: Bearer <token>`: TREADLE_API_KEY=<token> for the treadle",
        "command, Client(address, api_key=<token>) in Python.",
    ]
    return "\n".join(lines)


def _keys_table(keys: list[ApiKey]) -> str:
    now = _now()
    headers = ("KEY", "TENANT", "NAME", "SCOPES", "STATUS", "CREATED", "EXPIRES", "LAST USED")
    rows = [
        (
            k.prefix,
            k.tenant,
            k.name,
            ",".join(s.value for s in k.scopes),
            k.status(now),
            _when(k.created_at),
            _when(k.expires_at, "never"),
            _when(k.last_used_at, "never"),
        )
        for k in keys
    ]
    return table(headers, rows) if rows else "no API keys"


def run_keys(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Carry out one `treadle keys` action and print what it did."""
    from treadle.scheduler.keys import KeyStore, parse_scopes

    action: str = args.keys_command

    async def act(pool: Pool) -> str:
        store = KeyStore(pool)
        if action == "list":
            found = await store.list(args.tenant)
            if args.json:
                return json.dumps([k.to_json(_now()) for k in found], indent=2)
            return _keys_table(found)
        actor = _operator(args.tenant)
        if action == "create":
            expires = parse_duration(args.expires, "--expires") if args.expires else None
            made = await store.create(
                args.tenant,
                args.name,
                parse_scopes(args.scope),
                actor=actor,
                expires_at=_now() + expires if expires is not None else None,
            )
            return _made(made, args.json)
        if action == "revoke":
            key = await store.revoke(args.tenant, args.key, actor=actor)
            if args.json:
                return json.dumps(key.to_json(_now()), indent=2)
            return f"Revoked API key {key.prefix} ({key.name}) of tenant {key.tenant}."
        expires = parse_duration(args.expires, "--expires") if args.expires else None
        made, old = await store.rotate(
            args.tenant,
            args.key,
            actor=actor,
            grace=parse_duration(args.grace, "--grace"),
            expires_at=_now() + expires if expires is not None else None,
        )
        return _made(made, args.json, old)

    print(_with_pool(args, env, act, migrate=action != "list"))
    return 0


def run_audit(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`treadle audit`: print the latest audit events."""
    from treadle.scheduler import audit

    if not 1 <= args.limit <= audit.MAX_LIMIT:
        raise InvalidArgument(f"--limit must be 1 .. {audit.MAX_LIMIT}, got {args.limit}")
    limit: int = args.limit

    async def act(pool: Pool) -> str:
        events = await audit.AuditLog(pool).list(args.tenant, limit)
        if args.json:
            return json.dumps([e.to_json() for e in events], indent=2)
        if not events:
            return "no audit events"
        headers = ("ID", "AT", "TENANT", "BY", "ACTION", "TARGET", "CHANGE")
        rows = [
            (
                str(e.id),
                _when(e.at),
                e.tenant,
                _by(e.key_id, e.key_name),
                e.action,
                e.target,
                _short(json.dumps(e.change, separators=(",", ":"))),
            )
            for e in events
        ]
        return table(headers, rows)

    print(_with_pool(args, env, act, migrate=False))
    return 0


def _by(key_id: str | None, key_name: str | None) -> str:
    """Who did it: the key's name and id, `cli:<user>`, or nobody (authentication off)."""
    if key_id is not None:
        return f"{key_name} (trdl_{key_id})"
    return key_name or "(auth off)"


def _short(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
