"""The cost limit: each operation's cost is estimated from its document, and
one over TREADLE_GRAPHQL_MAX_COST is refused before it runs (INVALID_ARGUMENT),
once per document thanks to the validation cache. The estimates are checked
on the real schema; the limit through a real gateway."""

from __future__ import annotations

import re

import httpx
import pytest
from graphql import parse, validate
from strawberry.extensions.validation_cache import DEFAULT_MAXSIZE, _get_validate_cache

from treadle.gateway import cost
from treadle.gateway.schema import MAX_COST, create_schema
from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings
from treadle.scheduler.supervisor import Replica

from .helpers import GraphQL, graphql_over

SCHEMA = create_schema()._schema
ESTIMATE = re.compile(r"estimated cost is ([\d,]+), over the limit of 0")
EVERY_TASK_FIELD = """
    id name queue state payload result attempts maxAttempts priority runAt createdAt
    startedAt finishedAt idempotencyKey cancelRequested timeoutSeconds existing
    error { type message traceback attempt failedAt }
    errors { type message traceback attempt failedAt }
    retry { baseSeconds factor maxSeconds }
"""


def estimate(document: str) -> int:
    """The cost the rule finds for `document`'s one operation (against a limit of 0)."""
    (error,) = validate(SCHEMA, parse(document), [cost.rule(0)])
    found = ESTIMATE.search(error.message)
    assert found, error.message
    return int(found.group(1).replace(",", ""))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ('{ task(id: "x") { id state } }', 3),
        ('mutation { submitTask(input: {name: "echo"}) { id } }', 2),
        # The page size multiplies the page's lists, once.
        ("{ tasks(first: 50) { nodes { id state } } }", 1 + 1 + 50 * 2),
        ("{ tasks { edges { node { id } } pageInfo { endCursor } } }", 1 + 1 + 50 * 2 + 2),
        # A variable page size counts as the largest the scheduler accepts ...
        ("query($n: Int!) { tasks(first: $n) { nodes { id } } }", 1 + 1 + 1000),
        # ... and so does a literal past it.
        ("{ tasks(first: 100000) { nodes { id } } }", 1 + 1 + 1000),
        # Paging backward: the larger of `first` (default 50) and `last`.
        ("{ tasks(last: 200) { nodes { id } } }", 1 + 1 + 200),
        ("{ tasks(last: 5) { nodes { id } } }", 1 + 1 + 50),
        ("query($n: Int) { tasks(last: $n) { nodes { id } } }", 1 + 1 + 1000),
        ("{ errorPatterns { type queues } }", 1 + 10 * 2),
        ("{ errorPatterns(limit: 3) { type } }", 1 + 3),
        # Lists without a page size count 10 items; lists of scalars count 1.
        ("{ queues { name retry { factor } } }", 1 + 10 * (1 + 2)),
        ("{ tasks(first: 2) { nodes { errors { message } } } }", 1 + 1 + 2 * (1 + 10)),
        # __typename is free; fragments count where they are spread.
        ("{ __typename tasks(first: 2) { __typename nodes { __typename id } } }", 1 + 1 + 2),
        (
            "{ a: tasks(first: 2) { nodes { ...T } } b: tasks(first: 3) { nodes { ...T } } }"
            " fragment T on Task { id name }",
            (1 + 1 + 2 * 2) + (1 + 1 + 3 * 2),
        ),
        ("{ ... on Query { task(id: 1) { ... on Task { id } } } }", 2),
    ],
)
def test_the_estimate(document: str, expected: int) -> None:
    assert estimate(document) == expected


def test_a_fragment_cycle_is_left_to_graphql_s_own_rule() -> None:
    document = parse("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }")
    assert validate(SCHEMA, document, [cost.rule(0)]) == []


def test_the_default_limit() -> None:
    assert Settings().graphql_max_cost == MAX_COST == 10_000
    # A page of 100 tasks with every field fits; 1,000 of them do not.
    assert estimate(f"{{ tasks(first: 100) {{ nodes {{ {EVERY_TASK_FIELD} }} }} }}") < MAX_COST
    assert estimate(f"{{ tasks(first: 1000) {{ nodes {{ {EVERY_TASK_FIELD} }} }} }}") > MAX_COST


async def test_an_operation_over_the_default_limit_is_refused(gql: GraphQL) -> None:
    body = await gql(f"query Big {{ tasks(first: 1000) {{ nodes {{ {EVERY_TASK_FIELD} }} }} }}")
    assert body.get("data") is None, body
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "INVALID_ARGUMENT"}
    assert re.match(
        r"the operation's estimated cost is [\d,]+, over the limit of 10,000", error["message"]
    )
    body = await gql(f"{{ tasks(first: 100) {{ nodes {{ {EVERY_TASK_FIELD} }} }} }}")
    assert body == {"data": {"tasks": {"nodes": []}}}


async def test_the_limit_is_a_setting_and_its_verdicts_are_cached(replica: Replica) -> None:
    settings = Settings(http_port=0, scheduler_address=replica.address, graphql_max_cost=10)
    gateway = Gateway(settings)
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            gql = graphql_over(http)
            assert await gql("{ tasks(first: 8) { nodes { id } } }") == {
                "data": {"tasks": {"nodes": []}}
            }
            over = "{ tasks(first: 9) { nodes { id } } }"  # 11
            validations = _get_validate_cache(DEFAULT_MAXSIZE)
            refusals = []
            for _ in range(4):
                refusals.append((await gql(over))["errors"])
                if len(refusals) == 1:
                    before = validations.cache_info()  # validated once, the first time
            after = validations.cache_info()
    finally:
        await gateway.stop()
    for (error,) in refusals:
        assert error["message"].startswith(
            "the operation's estimated cost is 11, over the limit of 10"
        )
    assert (after.hits, after.misses) == (before.hits + 3, before.misses)
