"""Durations the `treadle` command takes (`--expires 90d`, `--since 1h`,
`--older-than 1d`), parsed in this one place."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from treadle.common.errors import InvalidArgument

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, flag: str) -> timedelta:
    """`90d`, `24h`, `30m`, `45s`, `2w`, or seconds (`3600`); anything else is
    `InvalidArgument` naming `flag`."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidArgument(f"{flag} {text!r} is not a duration such as 90d, 24h, 30m or 3600")
    try:
        return timedelta(seconds=float(match[1]) * _UNIT[match[2]])
    except OverflowError:
        raise InvalidArgument(f"{flag} {text!r} is too long a duration") from None


def ago(text: str, flag: str, now: datetime | None = None) -> datetime:
    """The time `text` (a duration) before `now` (default: now, UTC)."""
    base = now or datetime.now(UTC)
    try:
        return base - parse_duration(text, flag)
    except OverflowError:
        raise InvalidArgument(f"{flag} {text!r} reaches before year 1") from None
