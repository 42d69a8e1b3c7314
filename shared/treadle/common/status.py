"""The one table between Treadle's errors and gRPC status codes.

A rate limit's refusal (`ResourceExhausted` with `retry_after`) also carries
its hint in the trailing metadata `retry-after`: the seconds, as a decimal
number ("0.25"), after which the same call may succeed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import grpc

from treadle.common import errors

_TO_GRPC: dict[str, grpc.StatusCode] = {
    code: getattr(grpc.StatusCode, code) for code in errors.BY_CODE
}
#: The trailing metadata key of a rate limit's retry-after hint.
RETRY_AFTER = "retry-after"


def to_grpc(error: errors.TreadleError) -> grpc.StatusCode:
    """The gRPC status code for one of our errors."""
    return _TO_GRPC.get(error.code, grpc.StatusCode.INTERNAL)


def from_grpc(
    code: grpc.StatusCode, message: str, retry_after: float | None = None
) -> errors.TreadleError:
    """Our error for a gRPC status; codes we do not map become `Unavailable` or
    `Internal`. `retry_after` goes with a RESOURCE_EXHAUSTED."""
    name = code.name
    if name == errors.ResourceExhausted.code:
        return errors.ResourceExhausted(message or None, retry_after)
    if name in errors.BY_CODE:
        return errors.BY_CODE[name](message or None)
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN) and not message:
        return errors.Unavailable()
    return errors.Internal(message or None)


def retry_after_of(error: errors.TreadleError) -> float | None:
    """The retry-after hint `error` carries (a rate limit's), if any."""
    if isinstance(error, errors.ResourceExhausted):
        return error.retry_after
    return None


def trailers(error: errors.TreadleError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata that goes with `error`: its retry-after, if any."""
    retry_after = retry_after_of(error)
    if retry_after is None:
        return ()
    return ((RETRY_AFTER, f"{retry_after:.3f}"),)


def retry_after_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """The retry-after hint in trailing `metadata`; None when there is none or
    it is not a finite number of seconds, 0 or more."""
    for key, value in metadata or ():
        if key != RETRY_AFTER:
            continue
        try:
            seconds = float(value.decode() if isinstance(value, bytes) else value)
        except (ValueError, UnicodeDecodeError):
            return None
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None
