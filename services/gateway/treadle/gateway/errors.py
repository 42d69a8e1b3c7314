"""How errors leave the gateway.

A Treadle error raised by a resolver keeps its message and gains
`extensions.code` (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
UNAVAILABLE, ...). Any other exception raised while resolving is masked: the
client sees "Internal error." with code INTERNAL, and the traceback is logged.
Errors found before execution (syntax, validation, variable coercion, depth
limit) are the client's and pass through unchanged, except that a value its
type refuses (a variable's or a literal's) gains `extensions.code`
INVALID_ARGUMENT. A rate limit's refusal (RESOURCE_EXHAUSTED) also carries
`extensions.retryAfter`: the seconds after which the same request may
succeed. Subscriptions get the same
treatment for every result they stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.types.execution import StreamExecutionResult

from treadle.common import errors

log = logging.getLogger("treadle.gateway")

#: Codes whose message may describe our infrastructure: clients get the generic text.
_DETAIL_LOGGED_ONLY = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL"})


def treadle_error(error: GraphQLError) -> errors.TreadleError | None:
    """The Treadle error behind a GraphQL error, if it is one. A text argument
    holding a lone UTF-16 surrogate (JSON can spell one, `"\\ud800"`; protobuf
    cannot carry it) is the caller's INVALID_ARGUMENT."""
    original = error.original_error
    if isinstance(original, UnicodeEncodeError):
        return errors.InvalidArgument(
            "a text argument holds a lone UTF-16 surrogate (such as \\ud800), which is not text"
        )
    return original if isinstance(original, errors.TreadleError) else None


def is_unexpected(error: GraphQLError) -> bool:
    """True for an exception raised while resolving that is neither ours nor GraphQL's."""
    original = error.original_error
    return (
        error.path is not None
        and original is not None
        and not isinstance(original, (errors.TreadleError, GraphQLError, UnicodeEncodeError))
    )


def _is_bad_value(error: GraphQLError) -> bool:
    """True for graphql-core's refusal of a value (a variable's or a literal's)."""
    message = error.message
    return message.startswith("Variable '$") or "cannot represent" in message


class CodedErrors(MaskErrors):
    """Strawberry's MaskErrors that keeps Treadle's errors and stamps their code."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message=errors.Internal().message)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": errors.Internal.code}
        return masked

    def on_operation(self) -> Iterator[None]:
        yield from super().on_operation()
        _stamp_codes(self.execution_context.result)

    def _process_result(self, result: object) -> None:
        # Strawberry's check is an isinstance of a runtime Protocol, ~20 µs
        # per operation; most results carry no errors.
        if getattr(result, "errors", None):
            super()._process_result(result)

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        _stamp_codes(result)  # only Treadle's errors get a code; masking leaves them be
        yield from super().on_stream_result(result)


def _stamp_codes(result: object) -> None:
    for error in getattr(result, "errors", None) or ():
        cause = treadle_error(error)
        if cause is None and error.path is None and _is_bad_value(error):
            # A variable or literal its type refuses (a DateTime Python cannot
            # hold, an Int past 32 bits): the client's INVALID_ARGUMENT.
            error.extensions = {**(error.extensions or {}), "code": errors.InvalidArgument.code}
        elif cause is not None:
            error.extensions = {**(error.extensions or {}), "code": cause.code}
            if isinstance(cause, errors.ResourceExhausted) and cause.retry_after is not None:
                # A rate limit: seconds until the same request may succeed.
                error.extensions["retryAfter"] = round(cause.retry_after, 3)
            if cause is not error.original_error:  # said in our words (see treadle_error)
                error.message = cause.message
            if cause.code in _DETAIL_LOGGED_ONLY:
                # Transport details (addresses, resolver output) stay in the log.
                error.message = type(cause)().message


def log_errors(found: list[GraphQLError]) -> None:
    """Log what operators should hear about: tracebacks only for unexpected errors."""
    for error in found:
        cause = treadle_error(error)
        if is_unexpected(error):
            log.error("%s", error.message, exc_info=error.original_error)
        elif cause is not None and cause.code in ("INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"):
            log.warning("scheduler call failed: %s %s", cause.code, cause.message)
