"""Settings from `TREADLE_*` environment variables, read once at start-up.

Each service declares a frozen dataclass; `load` fills it from the
environment (a field `grpc_port` is read from `TREADLE_GRPC_PORT`) and from
explicit overrides (command-line flags), which win. A malformed value, or a
`TREADLE_*` variable that no settings class knows, fails with a message that
names the variable.

A field declared with `setting(...)` carries its own checks (`positive`,
`port`, ...), run by `load`, and may carry a command-line flag that
`add_flags` adds to a parser:

    grpc_port: int = setting(50051, checks=(port,), flags="scheduler",
                             help="gRPC listen port ({env}, default {default})")

Installed packages declare their settings classes as entry points in the
group `treadle.settings`, so each process knows every variable that any
Treadle process reads (`installed`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any, TypeVar

from treadle.common.errors import InvalidArgument

PREFIX = "TREADLE_"
#: Variables of the test suite and CI (TREADLE_TEST_DATABASE_URL,
#: TREADLE_TEST_REQUIRE_BROWSER, ...): read by tests, never by a settings class,
#: and inherited by the commands the tests run.
_TEST_PREFIX = "TREADLE_TEST_"

T = TypeVar("T")
#: A check on one setting: (variable name, value); raises `InvalidArgument`.
Check = Callable[[str, Any], None]
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


def setting(
    default: Any,
    *,
    checks: tuple[Check, ...] = (),
    flags: str | None = None,
    help: str | None = None,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A settings field: its default and the `checks` its value must pass.

    With `flags` (a name for a set of flags, such as "database"), `add_flags`
    adds a command-line flag for it: `--grpc-port` for `grpc_port` unless
    `flag` names another, with `help`, in which `{env}` is the variable and
    `{default}` the default. `choices` limits the value (flag and variable)."""
    if choices is not None:
        checks = (*checks, one_of(*choices))
    meta = {"checks": checks, "flags": flags, "help": help, "flag": flag, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


def check(settings: Any) -> None:
    """Run each field's checks on `settings`, then its `validate()` (the rules
    that join several fields) if it has one. A float must be finite before any
    check sees it (NaN passes every comparison)."""
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"{env_name(field.name)} must be a finite number, got {value}")
        if value is not None:
            for rule in field.metadata.get("checks", ()):
                rule(env_name(field.name), value)
    validate = getattr(settings, "validate", None)
    if validate is not None:
        validate()


def load(cls: type[T], env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> T:
    """Build `cls` from `env` and those `overrides` that name a field and are not
    None (parsed arguments, say), then `check` it."""
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        name = env_name(field.name)
        if name in env:
            values[field.name] = _parse(name, env[name], hints[field.name])
        given = (overrides or {}).get(field.name)
        if given is not None:
            values[field.name] = given
    settings = cls(**values)
    check(settings)
    return settings


def _shown(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def add_flags(parser: argparse._ActionsContainer, cls: type[Any], flags: str) -> None:
    """Add to `parser` (or an argument group) the flag of each field of `cls`
    declared with `setting(flags=flags)`; a flag's value lands on the field's name.
    A boolean field's flag takes no value: given, it sets the field true (not
    given, the variable or the default stands)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if meta.get("flags") != flags:
            continue
        kind = hints[field.name]
        if isinstance(kind, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        name = meta["flag"] or "--" + field.name.replace("_", "-")
        text = meta["help"].format(env=env_name(field.name), default=_shown(field.default))
        if kind is bool:
            parser.add_argument(name, dest=field.name, action="store_const", const=True, help=text)
            continue
        parser.add_argument(name, dest=field.name, type=kind, choices=meta["choices"], help=text)


def installed() -> list[type[Any]]:
    """The settings classes the installed Treadle packages declare (entry points
    in the group `treadle.settings`)."""
    return [entry.load() for entry in metadata.entry_points(group="treadle.settings")]


def check_unknown(env: Mapping[str, str], classes: Iterable[type[Any]]) -> None:
    """Fail on a `TREADLE_*` variable that none of `classes`, nor any `installed`
    class, reads (a typo, most likely). The installed classes are looked up
    only when `classes` do not know a variable: that reads every installed
    distribution's entry points and imports each class's module (in a
    replica, the gateway's settings), which a start need not pay for."""
    known: set[str] = set()

    def learn(found: Iterable[type[Any]]) -> list[str]:
        for cls in found:
            known.update(env_name(f.name) for f in dataclasses.fields(cls))
        return sorted(
            k
            for k in env
            if k.startswith(PREFIX) and not k.startswith(_TEST_PREFIX) and k not in known
        )

    unknown = learn(classes)
    if unknown:
        unknown = learn(installed())
    if unknown:
        raise InvalidArgument(
            f"unknown setting {', '.join(unknown)}; known settings: {', '.join(sorted(known))}"
        )


# -- checks ---------------------------------------------------------------------


def positive(name: str, value: float) -> None:
    if value <= 0:
        raise InvalidArgument(f"{name} must be positive, got {value}")


def not_negative(name: str, value: float) -> None:
    if value < 0:
        raise InvalidArgument(f"{name} must not be negative")


def port(name: str, value: int) -> None:
    if not 0 <= value < 65536:
        raise InvalidArgument(f"{name} out of range: {value}")


def not_empty(name: str, value: str) -> None:
    if not value.strip():
        raise InvalidArgument(f"{name} must not be empty")


def at_most(limit: float) -> Check:
    def at_most(name: str, value: float) -> None:
        if value > limit:
            raise InvalidArgument(f"{name} must be at most {limit}")

    return at_most


def matches(pattern: str, what: str) -> Check:
    """The value must match `pattern` (`re.match`); `what` says in words what it must be."""
    compiled = re.compile(pattern)

    def matches(name: str, value: str) -> None:
        if not compiled.match(value):
            raise InvalidArgument(f"{name} must be {what}, got {value!r}")

    return matches


def one_of(*choices: str) -> Check:
    def one_of(name: str, value: str) -> None:
        if value not in choices:
            raise InvalidArgument(f"{name} must be {' or '.join(choices)}, got {value!r}")

    return one_of
