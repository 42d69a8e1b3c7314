"""How resolver errors reach clients: Treadle's keep message and code, others are masked.

Runs a small Strawberry schema with the gateway's error extension, in process:
the only way to make a resolver raise something unexpected on demand.
"""

from __future__ import annotations

import logging

import pytest
import strawberry

from treadle.common import errors
from treadle.gateway.errors import CodedErrors
from treadle.gateway.schema import Schema


@strawberry.type
class Query:
    @strawberry.field
    def fine(self) -> int:
        return 1

    @strawberry.field
    def invalid(self) -> int:
        raise errors.InvalidArgument("priority 1000 is out of range")

    @strawberry.field
    def busy(self) -> int:
        raise errors.InvalidState()

    @strawberry.field
    def bug(self) -> int:
        raise RuntimeError("secret connection string postgres://me:pw@db")


schema = Schema(query=Query, extensions=[CodedErrors])


async def test_treadle_errors_keep_message_and_gain_code() -> None:
    result = await schema.execute("{ fine invalid busy }")
    assert result.data is None  # non-null fields propagate the null to the root
    assert result.errors is not None
    formatted = [e.formatted for e in result.errors]
    assert formatted == [
        {
            "message": "priority 1000 is out of range",
            "locations": [{"line": 1, "column": 8}],
            "path": ["invalid"],
            "extensions": {"code": "INVALID_ARGUMENT"},
        }
    ]
    result = await schema.execute("{ busy }")
    assert result.errors is not None
    assert result.errors[0].message == "The object is not in a state that allows this."
    assert result.errors[0].extensions == {"code": "FAILED_PRECONDITION"}


async def test_unexpected_errors_are_masked_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="treadle.gateway"):
        result = await schema.execute("{ bug }")
    assert result.errors is not None
    (error,) = result.errors
    assert error.message == "Internal error."
    assert error.extensions == {"code": "INTERNAL"}
    assert "secret" not in str(error.formatted)
    (record,) = caplog.records
    assert record.exc_info is not None and "secret" in str(record.exc_info[1])


async def test_client_mistakes_are_not_masked() -> None:
    result = await schema.execute("{ fine(x: 1) }")
    assert result.errors is not None
    assert "Unknown argument 'x'" in result.errors[0].message
    result = await schema.execute("{ fine")
    assert result.errors is not None
    assert result.errors[0].message.startswith("Syntax Error")
