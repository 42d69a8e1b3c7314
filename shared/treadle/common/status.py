"""The one table between Treadle's errors and gRPC status codes."""

from __future__ import annotations

import grpc

from treadle.common import errors

_TO_GRPC: dict[str, grpc.StatusCode] = {
    code: getattr(grpc.StatusCode, code) for code in errors.BY_CODE
}


def to_grpc(error: errors.TreadleError) -> grpc.StatusCode:
    """The gRPC status code for one of our errors."""
    return _TO_GRPC.get(error.code, grpc.StatusCode.INTERNAL)


def from_grpc(code: grpc.StatusCode, message: str) -> errors.TreadleError:
    """Our error for a gRPC status; codes we do not map become `Unavailable` or `Internal`."""
    name = code.name
    if name in errors.BY_CODE:
        return errors.BY_CODE[name](message or None)
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN) and not message:
        return errors.Unavailable()
    return errors.Internal(message or None)
