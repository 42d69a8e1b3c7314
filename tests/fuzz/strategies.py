"""Hypothesis strategies for requests: valid ones, and hostile ones that mix
valid fields with extreme timestamps and numbers, random or broken unicode,
broken and deeply nested JSON.

Text that goes into a protobuf string must be encodable as UTF-8 (protobuf
refuses a lone surrogate before sending); lone surrogates reach the server as
JSON escapes inside payloads instead, and invalid UTF-8 as raw bytes.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from treadle.api.v1 import scheduler_pb2 as pb

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
#: Handlers of tests/taskapp.py that end quickly whatever their payload
#: (all in the queue "default").
NAMES = ("echo", "noop", "boom", "permanent")
DEFAULT_QUEUE = "default"

# -- text ---------------------------------------------------------------------------

#: Any character UTF-8 can carry (no lone surrogates), NUL and controls included.
ANY_CHAR = st.characters(codec="utf-8")
SAFE_CHAR = st.characters(codec="utf-8", exclude_characters="\x00")
#: Printable, no blanks: what a name, queue or key may be made of.
NAME_TEXT = st.text(
    st.characters(codec="ascii", categories=["L", "N"], include_characters="._-"),
    min_size=1,
    max_size=40,
)
HOSTILE_TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=50),
    st.sampled_from(
        [
            "",
            " ",
            "\t",
            "\n",
            "\x00",
            "a\x00b",
            "\x1b[31mred",
            "\u202eevil",
            "\ufeff",
            "\uffff",
            "\U0010ffff",
            "echo\x00",
            "echo ",
            " echo",
        ]
    ),
    st.integers(150, 300_000).map(lambda n: "x" * n),
)

# -- JSON ---------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(SAFE_CHAR, max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.text(SAFE_CHAR, max_size=10), inner, max_size=5),
    ),
    max_leaves=20,
)
#: Standard JSON text of a value PostgreSQL's jsonb holds.
VALID_PAYLOADS = JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=False))


def nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


HOSTILE_PAYLOADS = st.one_of(
    VALID_PAYLOADS,
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            '{"x": NaN}',
            "1e400",
            "-1e400",
            "[1e400]",
            "1e-400",
            "1" + "0" * 400,
            '"\\ud800"',
            '"\\udc00x"',
            '{"\\ud800": 1}',
            '"\\u0000"',
            '{"a": "\\u0000"}',
            '{"\\u0000": 1}',
            '"\\\\u0000"',
            '{"a": 1, "a": 2}',
            "nul",
            "[",
            "{}}",
            "   ",
            "\ufeff{}",
            "1 2",
        ]
    ),
    st.builds(nested, st.integers(1, 1500), st.sampled_from(["list", "dict"])),
    st.text(ANY_CHAR, max_size=30),
    st.integers(1, 1_100_000).map(lambda n: json.dumps("y" * n)),
)

# -- time ---------------------------------------------------------------------------

#: Seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, protobuf's limits.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799

VALID_TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def stamp(seconds: int, nanos: int) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=seconds, nanos=nanos)


def stamp_of(value: datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromDatetime(value)
    return t


HOSTILE_STAMPS = st.one_of(
    VALID_TIMES.map(stamp_of),
    st.builds(
        stamp,
        st.one_of(
            INT64,
            st.sampled_from(
                [MIN_SECONDS, MIN_SECONDS - 1, MAX_SECONDS, MAX_SECONDS + 1, 0, -1, 2**62]
            ),
            st.integers(MIN_SECONDS, MAX_SECONDS),
        ),
        st.one_of(
            st.integers(0, 999_999_999),
            st.sampled_from([-1, 999_999_999, 1_000_000_000, -(2**31), 2**31 - 1]),
            INT32,
        ),
    ),
)

FIXED_ZONES = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)
#: runAt as GraphQL text: anything ISO 8601 can say, and what it cannot.
HOSTILE_TIME_TEXT = st.one_of(
    VALID_TIMES.map(datetime.isoformat),
    st.datetimes(timezones=st.one_of(st.just(UTC), FIXED_ZONES)).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),
    st.sampled_from(
        [
            "9999-12-31T23:59:59.999999Z",
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "10000-01-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "infinity",
            "-infinity",
            "now",
            "",
        ]
    ),
    st.text(ANY_CHAR, max_size=30),
)

# -- numbers ------------------------------------------------------------------------

HOSTILE_FLOATS = st.one_of(
    st.floats(),
    st.sampled_from(
        [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, -1.0, 1e20, 1e12, 0.0]
    ),
)


# -- task specs -----------------------------------------------------------------------


@st.composite
def valid_specs(draw: st.DrawFn) -> pb.TaskSpec:
    """A submission every edge must accept and store as it is."""
    spec = pb.TaskSpec(
        name=draw(st.sampled_from(NAMES)),
        payload=draw(st.one_of(st.just(""), VALID_PAYLOADS)),
        queue=draw(st.one_of(st.just(""), NAME_TEXT)),
        priority=draw(st.integers(-100, 100)),
        idempotency_key=draw(st.one_of(st.just(""), NAME_TEXT)),
    )
    when = draw(st.sampled_from(["now", "run_at", "delay"]))
    if when == "run_at":
        spec.run_at.CopyFrom(stamp_of(draw(VALID_TIMES)))
    elif when == "delay":
        spec.delay_seconds = draw(st.floats(0, 365 * 86400))
    if draw(st.booleans()):
        spec.max_attempts = draw(st.integers(1, 5))
    if draw(st.booleans()):
        spec.timeout_seconds = draw(st.floats(0.001, 86400))
    if draw(st.booleans()):
        spec.retry.CopyFrom(
            pb.RetryPolicy(
                base_seconds=draw(st.floats(0, 3600)),
                factor=draw(st.floats(1, 10)),
                max_seconds=draw(st.floats(0, 86400)),
            )
        )
    return spec


def _maybe(draw: st.DrawFn, valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """Mostly the valid value, often enough the hostile one."""
    return draw(st.one_of(valid, hostile) if draw(st.booleans()) else valid)


@st.composite
def hostile_specs(draw: st.DrawFn, fields: frozenset[str]) -> pb.TaskSpec:
    """A valid spec with some of `fields` made hostile: "text" (name, queue,
    idempotency key), "payload", "time" (run_at, delay_seconds), "numbers"
    (priority, max_attempts, timeout, retry)."""
    spec = draw(valid_specs())
    if "text" in fields:
        spec.name = _maybe(draw, st.just(spec.name), HOSTILE_TEXT)
        spec.queue = _maybe(draw, st.just(spec.queue), HOSTILE_TEXT)
        spec.idempotency_key = _maybe(draw, st.just(spec.idempotency_key), HOSTILE_TEXT)
    if "payload" in fields:
        spec.payload = draw(HOSTILE_PAYLOADS)
    if "time" in fields:
        choice = draw(st.sampled_from(["run_at", "delay", "both", "keep"]))
        if choice in ("run_at", "both"):
            spec.run_at.CopyFrom(draw(HOSTILE_STAMPS))
        if choice == "run_at":
            spec.ClearField("delay_seconds")
        if choice in ("delay", "both"):
            spec.delay_seconds = draw(HOSTILE_FLOATS)
        if choice == "delay":
            spec.ClearField("run_at")
    if "numbers" in fields:
        spec.priority = _maybe(draw, st.just(spec.priority), INT32)
        if draw(st.booleans()):
            spec.max_attempts = _maybe(draw, st.integers(1, 5), INT32)
        if draw(st.booleans()):
            spec.timeout_seconds = draw(HOSTILE_FLOATS)
        if draw(st.booleans()):
            spec.retry.CopyFrom(
                pb.RetryPolicy(
                    base_seconds=draw(HOSTILE_FLOATS),
                    factor=draw(HOSTILE_FLOATS),
                    max_seconds=draw(HOSTILE_FLOATS),
                )
            )
    return spec


ALL_FIELDS = frozenset({"text", "payload", "time", "numbers"})
