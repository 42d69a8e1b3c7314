"""Conversions between Treadle's public types and protobuf, used only at the edges.

`Codec` converts a frozen dataclass to and from the message of the same
shape, field by field and by name, so a type and its message are listed once
(in `tasks`/`stats`/`health` and in the .proto) instead of again here. Its
rules, read from the dataclass annotations and the message descriptor:

- a `datetime` is a `Timestamp` (a naive one is refused); an unset one is
  None, or a broken reply when the annotation does not allow None;
- a dataclass with a codec is its message; a `tuple[...]` a repeated field;
- an enum is the proto enum whose values are the enum's prefixed by the proto
  enum's own prefix (`TaskState.DEAD` is `TASK_STATE_DEAD`), or a string;
  UNSPECIFIED is None, or a broken reply likewise;
- None is left unset. Where the annotation allows None, an unset field with
  presence (`optional`, a message) reads as None, and so does the zero value
  of a field without (`max_concurrent` 0 means no limit); where it does not,
  the field's value is read as it is.

What does not fit (a JSON text, a map kept as a repeated message, a default
other than None) is given to a codec as `encode`/`decode` overrides.

Payloads and results travel as JSON text, and the task types hold them as
text too (`Task.payload_json`, `result_json`), so converting a task copies
the text. `encode_json` and `decode_json` are the one encoder and decoder for
the client, the CLI, the gateway and the scheduler's checks, with one rule:
standard JSON that PostgreSQL's `jsonb` stores, so NaN, the infinities and
numbers a double cannot hold are refused, and so are strings with NUL or a
lone UTF-16 surrogate, and nesting deeper than a limit (`MAX_JSON_DEPTH`
unless the caller gives another). Times read from a `Timestamp` follow its
rules (nanos in 0..999,999,999, years 1..9999), and an enum number the enum
lacks is refused; each such refusal is `InvalidArgument` naming the field.

This module also holds the task types' codecs.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.common.errors import InvalidArgument
from treadle.common.tasks import (
    Queue,
    ReplicaInfo,
    RetryPolicy,
    Schedule,
    Task,
    TaskError,
    TaskSelection,
    TaskSpec,
    TaskState,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")
M = TypeVar("M", bound=Message)
E = TypeVar("E", bound=enum.Enum)

# -- JSON -------------------------------------------------------------------------

#: How deep arrays and objects may nest in a JSON value we accept, unless the
#: caller says otherwise (the scheduler's TREADLE_MAX_PAYLOAD_DEPTH).
MAX_JSON_DEPTH = 64
#: A UTF-16 surrogate (`\ud800`..`\udfff`), escaped or not: only valid in pairs.
_SURROGATE = re.compile("\\\\u[dD][89a-fA-F]|[\ud800-\udfff]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent, as a float; one a double cannot
    hold (`1e400` would be infinity, `1e-400` zero) is refused."""
    value = float(text)
    mantissa = text.lower().partition("e")[0]
    if not math.isfinite(value) or (value == 0 and any(c in "123456789" for c in mantissa)):
        raise ValueError(f"the number {shown(text)} is out of the range of a double")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
#: Standard JSON syntax only (`parse_json`).
_SYNTAX = json.JSONDecoder(parse_constant=_refuse_constant)


def shown(text: str, limit: int = 40) -> str:
    """`text` quoted and cut to `limit` characters, for an error message (which
    must stay short: it travels in a gRPC trailer)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _limit(max_depth: int | None) -> str:
    return "" if max_depth is None else f" (the limit is {max_depth})"


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in a decoded JSON value (walked, not recursed)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON value, object keys included."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            yield from (k for k in item if isinstance(k, str))
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _check(value: Any, text: str, field: str, max_depth: int | None) -> None:
    """Refuse, in the JSON `text` of `value`, what PostgreSQL's `jsonb` or our
    limits would not take: nesting deeper than `max_depth`, a string with NUL
    (`\\u0000`) or a lone UTF-16 surrogate (`\\ud800`). Cheap for most texts:
    the value is walked only when the text has that many brackets or such an
    escape."""
    if max_depth is not None and text.count("[") + text.count("{") > max_depth:
        depth = _depth(value)
        if depth > max_depth:
            raise InvalidArgument(f"{field} nests {depth} deep, over the limit of {max_depth}")
    if "\\u0000" not in text and not _SURROGATE.search(text):
        return
    for string in _strings(value):
        if "\x00" in string:
            raise InvalidArgument(f"{field} must not contain NUL characters (\\u0000)")
        try:
            string.encode()
        except UnicodeEncodeError:
            raise InvalidArgument(
                f"{field} holds a lone UTF-16 surrogate (such as \\ud800), which is not text"
            ) from None


def encode_json(value: Any, field: str = "payload", max_depth: int | None = MAX_JSON_DEPTH) -> str:
    """`value` as standard JSON text, non-ASCII characters kept as they are (so
    a payload's size is the same however it arrived: the UTF-8 bytes of its
    text). Raises `InvalidArgument` naming `field` when it has no such form
    (NaN, an infinity, a set, an object...), nests deeper than `max_depth`, or
    holds a string `jsonb` refuses (NUL, a lone surrogate)."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except RecursionError:
        raise InvalidArgument(f"{field} nests too deep{_limit(max_depth)}") from None
    except ValueError as exc:
        raise InvalidArgument(
            f"{field} is not JSON-serialisable: {exc} (NaN and Infinity are not standard JSON)"
        ) from None
    except TypeError as exc:
        raise InvalidArgument(f"{field} is not JSON-serialisable: {exc}") from None
    _check(value, text, field, max_depth)
    return text


def parse_json(text: str, field: str) -> Any:
    """The value of standard JSON `text` (no NaN or Infinity literals), with no
    check of what it holds: for a document that carries payloads and names
    (a GraphQL request body), whose own rules are applied field by field when
    each is used, so an error can name the field. Raises `InvalidArgument`
    naming `field` when the text is not JSON or nests past Python's limit."""
    try:
        return _SYNTAX.decode(text)
    except RecursionError:
        raise InvalidArgument(f"{field} nests too deep to read") from None
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not valid JSON: {str(exc)[:200]}") from None


def decode_json(text: str, field: str = "payload", max_depth: int | None = MAX_JSON_DEPTH) -> Any:
    """The value of the JSON text; raises `InvalidArgument` naming `field` when it
    is not standard JSON (NaN and the infinities included, and numbers a double
    cannot hold, such as 1e400), nests deeper than `max_depth` (None: no limit
    but Python's), or holds a string `jsonb` refuses (NUL, a lone surrogate)."""
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise InvalidArgument(f"{field} nests too deep{_limit(max_depth)}") from None
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not valid JSON: {str(exc)[:200]}") from None
    _check(value, text, field, max_depth)
    return value


# -- times and enums ----------------------------------------------------------------


#: `google.protobuf.Timestamp`'s range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)


def time_to_proto(value: datetime | None, target: Timestamp, field: str = "time") -> None:
    if value is None:
        return
    if value.utcoffset() is None:
        raise InvalidArgument(f"{field} must carry a time zone (a naive datetime is ambiguous)")
    try:
        target.FromDatetime(value)
    except (OverflowError, ValueError):  # 9999-12-31T23:00-05:00 is past year 9999 in UTC
        raise InvalidArgument(f"{field} {value.isoformat()} is out of range") from None


def time_from_proto(msg: Any, field: str) -> datetime | None:
    """The time in `msg`'s Timestamp field `field`, None when unset; a Timestamp
    that breaks its rules (nanos in 0..999,999,999, seconds within years
    1..9999) is `InvalidArgument` naming the field."""
    if not msg.HasField(field):
        return None
    stamp: Timestamp = getattr(msg, field)
    if not 0 <= stamp.nanos <= 999_999_999:
        raise InvalidArgument(f"{field}.nanos must be in 0..999999999, got {stamp.nanos}")
    low, high = _TIMESTAMP_SECONDS
    if not low <= stamp.seconds <= high:
        raise InvalidArgument(
            f"{field}.seconds must be in {low}..{high} (years 1..9999), got {stamp.seconds}"
        )
    return stamp.ToDatetime(tzinfo=UTC)


def _prefix(values: EnumDescriptor) -> str:
    """`TASK_STATE_` for the enum whose zero value is `TASK_STATE_UNSPECIFIED`."""
    return values.values_by_number[0].name.removesuffix("UNSPECIFIED")


def enum_to_proto(value: enum.Enum | None, values: EnumDescriptor) -> int:
    """The proto enum number of `value`; None is the zero (UNSPECIFIED) value."""
    if value is None:
        return 0
    return values.values_by_name[f"{_prefix(values)}{value.value}"].number


def enum_from_proto(
    cls: type[E], values: EnumDescriptor, number: int, field: str = "enum"
) -> E | None:
    """The member of `cls` for a proto enum number; None for UNSPECIFIED. A number
    the enum does not have (open enums let a sender set any) is `InvalidArgument`
    naming `field`."""
    if number == 0:
        return None
    known = values.values_by_number.get(number)
    if known is None:
        raise InvalidArgument(f"{field} {number} is not a {values.name} value")
    return cls(known.name.removeprefix(_prefix(values)))


def as_enum(cls: type[E], value: E | str, field: str) -> E:
    """`value` as a member of `cls`: a member itself, or its value or name as
    a string in any case (`"dead"`, `TaskState.DEAD`); anything else is
    `InvalidArgument` naming `field` and the values it may take."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        text = value.strip()
        for member in cls:
            if text.upper() in (str(member.value).upper(), member.name.upper()):
                return member
    known = ", ".join(str(m.value) for m in cls)
    raise InvalidArgument(f"{field} {value!r} is not one of {known}")


# -- the codec -------------------------------------------------------------------------

#: Every codec by its dataclass, so a codec finds those of its nested types.
_CODECS: dict[type, Codec[Any, Any]] = {}


Writer = Callable[[Any, Any], None]
Reader = Callable[[Any], Any]


def _is_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, enum.Enum)


def _writer(kind: Any, proto: Any, codec: Codec[Any, Any] | None) -> Writer:
    """What sets a value (never None) of type `kind` on the message field `proto`."""
    name = proto.name
    if proto.is_repeated:
        if codec is None:
            return lambda msg, v: getattr(msg, name).extend(v)
        return lambda msg, v: getattr(msg, name).extend([codec.to_proto(x) for x in v])
    if kind is datetime:
        return lambda msg, v: time_to_proto(v, getattr(msg, name), name)
    if codec is not None:
        return lambda msg, v: getattr(msg, name).CopyFrom(codec.to_proto(v))
    if _is_enum(kind) and proto.enum_type is not None:
        values = proto.enum_type
        return lambda msg, v: setattr(msg, name, enum_to_proto(v, values))
    if _is_enum(kind):
        return lambda msg, v: setattr(msg, name, v.value)
    return lambda msg, v: setattr(msg, name, v)


def _reader(kind: Any, optional: bool, proto: Any, codec: Codec[Any, Any] | None) -> Reader:
    """What reads a value of the annotation `kind` (`| None` when `optional`) from
    the message field `proto`."""
    name = proto.name
    if proto.is_repeated:
        if codec is None:
            return lambda msg: tuple(getattr(msg, name))
        return lambda msg: tuple(codec.from_proto(x) for x in getattr(msg, name))
    if kind is not datetime and codec is None and not _is_enum(kind):  # a plain scalar
        if not optional:
            return lambda msg: getattr(msg, name)
        if proto.has_presence:
            return lambda msg: getattr(msg, name) if msg.HasField(name) else None
        return lambda msg: getattr(msg, name) or None  # the zero value stands for None
    read: Reader
    if kind is datetime:
        read = lambda msg: time_from_proto(msg, name)  # noqa: E731
    elif codec is not None:
        read = lambda msg: codec.from_proto(getattr(msg, name))  # noqa: E731
    elif proto.enum_type is not None:
        values = proto.enum_type
        read = lambda msg: enum_from_proto(kind, values, getattr(msg, name), name)  # noqa: E731
    else:
        read = lambda msg: kind(getattr(msg, name))  # noqa: E731
    if optional and proto.has_presence:
        return lambda msg: read(msg) if msg.HasField(name) else None
    if optional:
        return read

    def required(msg: Any) -> Any:
        value = read(msg)
        assert value is not None, f"{name} is always set"
        return value

    return required


class Codec(Generic[D, M]):
    """Converts the dataclass `cls` to and from the protobuf `message` (see the
    module docstring for the rules). `rename` maps a dataclass field to the
    message field of another name; `encode[name]` turns a field's value into
    what is set on the message; `decode[name]` reads a field's value from the
    message. A dataclass field the message lacks is not sent; decoding, it
    takes its default or the keyword given to `from_proto`."""

    def __init__(
        self,
        cls: type[D],
        message: type[M],
        *,
        rename: Mapping[str, str] | None = None,
        encode: Mapping[str, Callable[[Any], Any]] | None = None,
        decode: Mapping[str, Callable[[M], Any]] | None = None,
    ) -> None:
        self.cls = cls
        self.message = message
        hints = typing.get_type_hints(cls)
        by_name = message.DESCRIPTOR.fields_by_name
        #: Per field: its name, what prepares its value (or None), what sets it.
        self._writers: list[tuple[str, Callable[[Any], Any] | None, Writer]] = []
        #: Per field: its name and what reads it.
        self._readers: list[tuple[str, Reader]] = []
        for field in dataclasses.fields(cls):
            proto = by_name.get((rename or {}).get(field.name, field.name))
            if proto is None:
                continue
            annotation = hints[field.name]
            args = typing.get_args(annotation)
            optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and (
                type(None) in args
            )
            kind = next(a for a in args if a is not type(None)) if optional else annotation
            item = typing.get_args(kind)[0] if typing.get_origin(kind) is tuple else kind
            codec = _CODECS.get(item)
            prepare = (encode or {}).get(field.name)
            self._writers.append((field.name, prepare, _writer(kind, proto, codec)))
            custom = (decode or {}).get(field.name)
            self._readers.append((field.name, custom or _reader(kind, optional, proto, codec)))
        _CODECS[cls] = self

    def to_proto(self, value: D) -> M:
        msg = self.message()
        for name, prepare, write in self._writers:
            v = getattr(value, name)
            if prepare is not None:
                v = prepare(v)
            if v is not None:
                write(msg, v)
        return msg

    def from_proto(self, msg: M, **given: Any) -> D:
        for name, read in self._readers:
            given[name] = read(msg)
        return self.cls(**given)


# -- tasks -----------------------------------------------------------------------------


def state_to_proto(state: TaskState | None) -> pb.TaskState.ValueType:
    return typing.cast(pb.TaskState.ValueType, enum_to_proto(state, pb.TaskState.DESCRIPTOR))


def state_from_proto(value: pb.TaskState.ValueType, field: str = "state") -> TaskState | None:
    return enum_from_proto(TaskState, pb.TaskState.DESCRIPTOR, value, field)


_RETRY = Codec(RetryPolicy, pb.RetryPolicy)
_ERROR = Codec(TaskError, pb.TaskError)
#: The JSON texts go on the wire as they are, neither decoded nor encoded again.
_TASK = Codec(
    Task,
    pb.Task,
    rename={"payload_json": "payload", "result_json": "result"},
    decode={"payload_json": lambda m: m.payload or "null"},
)
_SPEC = Codec(
    TaskSpec,
    pb.TaskSpec,
    rename={"payload_json": "payload"},
    decode={"payload_json": lambda m: m.payload or "null"},
)


def states_from_proto(values: Any, field: str = "states") -> tuple[TaskState, ...]:
    states = tuple(state_from_proto(v, field) for v in values)
    if None in states:
        raise InvalidArgument(f"{field} must not hold TASK_STATE_UNSPECIFIED")
    return typing.cast(tuple[TaskState, ...], states)


def states_to_proto(states: Any) -> list[pb.TaskState.ValueType]:
    return [state_to_proto(s) for s in states]


_SELECTION = Codec(
    TaskSelection,
    pb.TaskSelection,
    encode={"states": states_to_proto},
    decode={"states": lambda m: states_from_proto(m.states)},
)
_QUEUE = Codec(Queue, pb.Queue)
_SCHEDULE = Codec(Schedule, pb.Schedule, decode={"timezone": lambda m: m.timezone or "UTC"})
_REPLICA = Codec(ReplicaInfo, pb.Replica)

retry_to_proto = _RETRY.to_proto
retry_from_proto = _RETRY.from_proto
task_to_proto = _TASK.to_proto
task_from_proto = _TASK.from_proto
spec_to_proto = _SPEC.to_proto
spec_from_proto = _SPEC.from_proto
queue_to_proto = _QUEUE.to_proto
queue_from_proto = _QUEUE.from_proto
schedule_to_proto = _SCHEDULE.to_proto
schedule_from_proto = _SCHEDULE.from_proto
selection_to_proto = _SELECTION.to_proto
selection_from_proto = _SELECTION.from_proto
replica_to_proto = _REPLICA.to_proto
replica_from_proto = _REPLICA.from_proto
