"""Treadle's errors. One root; each class's docstring is its default message.

    TreadleError
    ├── InvalidArgument      bad input; nothing was stored or changed
    ├── NotFound             no such task (or queue, ...)
    ├── AlreadyExists        a unique key is taken
    ├── InvalidState         the object is in the wrong state for the call
    ├── Unauthenticated
    ├── PermissionDenied
    ├── ResourceExhausted    a rate limit or quota
    ├── Unavailable          the scheduler or its database cannot be reached
    ├── DeadlineExceeded     the call took longer than its deadline
    └── Internal             anything unexpected; details are logged, not sent

Driver errors (asyncpg, grpc) are translated into these at the one place they
enter our code: the store on the server side, the client on the caller's side.
"""

from __future__ import annotations


class TreadleError(Exception):
    """Treadle failed."""

    #: Stable machine-readable code; the gRPC status name and GraphQL extensions.code.
    code = "INTERNAL"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or "").strip().splitlines()[0]
        super().__init__(self.message)


class InvalidArgument(TreadleError):
    """The request is invalid."""

    code = "INVALID_ARGUMENT"


class NotFound(TreadleError):
    """Not found."""

    code = "NOT_FOUND"


class AlreadyExists(TreadleError):
    """Already exists."""

    code = "ALREADY_EXISTS"


class InvalidState(TreadleError):
    """The object is not in a state that allows this."""

    code = "FAILED_PRECONDITION"


class Unauthenticated(TreadleError):
    """Authentication is required."""

    code = "UNAUTHENTICATED"


class PermissionDenied(TreadleError):
    """Permission denied."""

    code = "PERMISSION_DENIED"


class ResourceExhausted(TreadleError):
    """A rate limit or quota was exceeded."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        #: Seconds after which the same call may succeed (a rate limit); None:
        #: no hint (a quota, or a batch larger than a burst).
        self.retry_after = retry_after


class Unavailable(TreadleError):
    """The service is unavailable; try again later."""

    code = "UNAVAILABLE"


class DeadlineExceeded(TreadleError):
    """The call did not finish before its deadline."""

    code = "DEADLINE_EXCEEDED"


class Internal(TreadleError):
    """Internal error."""

    code = "INTERNAL"


#: Every concrete error class by its code, for decoding a status on the wire
#: (the classes above, in order; each has its own code).
BY_CODE: dict[str, type[TreadleError]] = {cls.code: cls for cls in TreadleError.__subclasses__()}
