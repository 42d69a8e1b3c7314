"""Settings from `TREADLE_*` environment variables, read once at start-up.

Each service declares a frozen dataclass; `load` fills it from the
environment (a field `grpc_port` is read from `TREADLE_GRPC_PORT`) and from
explicit overrides (command-line flags), which win. A malformed value, or a
`TREADLE_*` variable that no settings class knows, fails with a message that
names the variable.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from treadle.common.errors import InvalidArgument

PREFIX = "TREADLE_"
#: Variables read by other parts (tests, tooling), never by a settings class.
_ALSO_KNOWN = frozenset({"TREADLE_TEST_DATABASE_URL", "TREADLE_TEST_REQUIRE_PROMTOOL"})

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def _parse(name: str, raw: str, kind: Any) -> Any:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if raw == "" else _parse(name, raw, inner[0])
    try:
        if kind is bool:
            low = raw.strip().lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError("expected true or false")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError as exc:
        raise InvalidArgument(f"{name}={raw!r} is not a valid {kind.__name__}: {exc}") from None
    return raw


def load(cls: type[T], env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> T:
    """Build `cls` from `env` and non-None `overrides`, then run its `validate()` if any."""
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        name = env_name(field.name)
        if name in env:
            values[field.name] = _parse(name, env[name], hints[field.name])
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    settings = cls(**values)
    validate = getattr(settings, "validate", None)
    if validate is not None:
        validate()
    return settings


def check_unknown(env: Mapping[str, str], classes: Iterable[type[Any]]) -> None:
    """Fail on a `TREADLE_*` variable that none of `classes` reads (a typo, most likely)."""
    known = set(_ALSO_KNOWN)
    for cls in classes:
        known.update(env_name(f.name) for f in dataclasses.fields(cls))
    unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known)
    if unknown:
        raise InvalidArgument(
            f"unknown setting {', '.join(unknown)}; known settings: {', '.join(sorted(known))}"
        )


def positive(name: str, value: float) -> None:
    """Raise when a setting that must be positive is not."""
    if value <= 0:
        raise InvalidArgument(f"{env_name(name)} must be positive, got {value}")
