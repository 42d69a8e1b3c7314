"""Typed payloads and results to and from JSON, one rule for both sides.

A task's payload (and its result) is declared by a type: a dataclass, a
`TypedDict`, a `msgspec.Struct`, a Pydantic model (when Pydantic is
installed), or plain JSON (`Any`, `dict[str, Any]`, `list[int]`, ...).
msgspec converts and validates the first three and plain JSON types; a
Pydantic model converts itself (`model_validate` / `model_dump`). On the
wire the value is JSON text, checked by `treadle.common.wire` like any
payload.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from treadle.common import wire
from treadle.common.errors import InvalidArgument

#: The values JSON holds as they are: no conversion needed.
_PLAIN = (dict, list, str, int, float, bool, type(None))


def _pydantic_model(kind: Any) -> bool:
    """Whether `kind` is a Pydantic model class (without importing Pydantic)."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(kind, type) and issubclass(kind, pydantic.BaseModel)


def untyped(kind: Any) -> bool:
    return kind is Any or kind is object


def to_builtins(value: Any) -> Any:
    """`value` as plain JSON values: a Pydantic model dumped in JSON mode, a
    dataclass, Struct, tuple or datetime converted by msgspec; plain JSON
    values as they are (what `wire.encode_json` then refuses, it refuses)."""
    if isinstance(value, _PLAIN):
        return value
    if _pydantic_model(type(value)):
        return value.model_dump(mode="json")
    try:
        return msgspec.to_builtins(value)
    except TypeError:
        return value  # not convertible: wire.encode_json names what is wrong


def _convert(value: Any, kind: Any, field: str) -> Any:
    """`value` (plain JSON) as `kind`, or `InvalidArgument` naming the field."""
    if untyped(kind):
        return value
    try:
        if _pydantic_model(kind):
            return kind.model_validate(value)
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"{field} is not a valid {_name(kind)}: {exc}") from None
    except Exception as exc:  # a Pydantic ValidationError, or a type msgspec cannot use
        pydantic = sys.modules.get("pydantic")
        if pydantic is not None and isinstance(exc, pydantic.ValidationError):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidArgument(f"{field} is not a valid {_name(kind)}: {problems}") from None
        if isinstance(exc, TypeError):
            message = f"{field}: {_name(kind)} is not a supported type: {exc}"
            raise InvalidArgument(message) from None
        raise


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or repr(kind)


def encode(value: Any, kind: Any, field: str = "payload") -> str:
    """`value`, declared as `kind`, as checked JSON text. Raises
    `InvalidArgument` naming the field that does not fit `kind`."""
    plain = to_builtins(value)
    if not untyped(kind):
        _convert(plain, kind, field)  # validates: what the other side will decode must decode
    return wire.encode_json(plain, field, max_depth=None)


def decode(text: str, kind: Any, field: str = "payload") -> Any:
    """The JSON `text` as a `kind` (plain JSON when untyped), or `InvalidArgument`."""
    value = wire.decode_json(text, field, max_depth=None)
    return _convert(value, kind, field)


def convert(value: Any, kind: Any, field: str = "result") -> Any:
    """A decoded JSON value as a `kind` (as it is when untyped), or `InvalidArgument`."""
    return _convert(value, kind, field)
