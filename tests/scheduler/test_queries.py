"""The named queries of sql/*.sql against the code that runs them: every name the
stores use exists, every call binds exactly the parameters its query declares,
every query is used, and the loader refuses a block whose declared parameters
do not match its placeholders."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from treadle.scheduler import postgres

PACKAGE = Path(postgres.__file__).parent
#: What runs a named query: postgres.fetch/fetchval/execute(conn, name, **params)
#: and the stores' self._fetch/_fetchval/_execute/_one(name, **params).
RUNNERS = {"fetch", "fetchval", "execute", "_fetch", "_fetchval", "_execute", "_one"}
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Use:
    where: str
    query: str
    #: The keywords passed; None when the call splats a mapping (`**params`).
    keywords: frozenset[str] | None


def uses() -> list[Use]:
    """Every call in the scheduler package that runs a named query by a literal name."""
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            names = [
                a.value
                for a in node.args
                if isinstance(a, ast.Constant)
                and isinstance(a.value, str)
                and _WORD.fullmatch(a.value)
            ]
            if called not in RUNNERS or not names:
                continue  # raw SQL, or a helper passing a name through
            keywords = [k.arg for k in node.keywords]
            found.append(
                Use(
                    f"{path.name}:{node.lineno}",
                    names[0],
                    None if None in keywords else frozenset(k for k in keywords if k),
                )
            )
    return found


def test_the_stores_run_named_queries() -> None:
    used = {u.query for u in uses()}
    assert {"insert_tasks", "claim", "complete", "stats_flush", "metrics_queues"} <= used


def test_every_query_used_in_code_exists() -> None:
    missing = [f"{u.where}: {u.query}" for u in uses() if u.query not in postgres.QUERIES]
    assert missing == []


def test_every_call_binds_exactly_the_declared_parameters() -> None:
    wrong = []
    for use in uses():
        query = postgres.QUERIES.get(use.query)
        if query is None:
            continue
        if use.keywords is None:
            wrong.append(f"{use.where}: {use.query} binds a **mapping; name each parameter")
        elif use.keywords != set(query.params):
            wrong.append(
                f"{use.where}: {use.query} never passes {sorted(set(query.params) - use.keywords)}"
                f", passes unknown {sorted(use.keywords - set(query.params))}"
            )
    assert wrong == []


def test_every_declared_parameter_is_bound_and_every_query_used() -> None:
    bound: dict[str, set[str]] = {name: set() for name in postgres.QUERIES}
    for use in uses():
        bound.get(use.query, set()).update(use.keywords or ())
    unused = [name for name, query in postgres.QUERIES.items() if not bound[name] and query.params]
    assert unused == []
    never_run = sorted(set(postgres.QUERIES) - {u.query for u in uses()})
    assert never_run == [], "queries in sql/ that no code runs"
    unbound = {
        name: sorted(set(q.params) - bound[name])
        for name, q in postgres.QUERIES.items()
        if set(q.params) - bound[name]
    }
    assert unbound == {}


def test_loaded_queries_carry_their_parameters_in_order() -> None:
    claim = postgres.QUERIES["claim"]
    assert claim.params == ("limit", "owner", "lease_seconds", "names")
    assert claim.args(names=["a"], owner="r1", lease_seconds=30.0, limit=5) == [
        5,
        "r1",
        30.0,
        ["a"],
    ]
    assert postgres.QUERIES["ping"].params == ()
    assert len(postgres.QUERIES["stats_flush"].params) == 32  # over several '-- params:' lines
    assert postgres.load_queries()["ping"] == postgres.QUERIES["ping"].sql


def test_binding_refuses_a_missing_or_unknown_name() -> None:
    claim = postgres.QUERIES["claim"]
    with pytest.raises(TypeError, match=r"missing \['lease_seconds'\], unknown \[\]"):
        claim.args(limit=1, owner="r1", names=[])
    with pytest.raises(TypeError, match=r"unknown \['lmit'\]"):
        claim.args(lmit=1, owner="r1", lease_seconds=1.0, names=[])


def block(params: str, sql: str) -> str:
    return f"-- name: q\n-- params: {params}\n-- $9 in a comment does not count\n{sql};\n"


def test_the_loader_reads_blocks_and_their_parameters() -> None:
    text = (
        "-- name: q\n-- params: a,\n-- params: b\n-- $9 in a comment does not count\n"
        "SELECT $2::int, $1::text;\n\n-- name: r\nSELECT 1;\n"
    )
    q, r = postgres.parse_queries(text).values()
    assert (q.name, q.params) == ("q", ("a", "b"))
    assert q.sql.endswith("SELECT $2::int, $1::text;")
    assert (r.name, r.sql, r.params) == ("r", "SELECT 1;", ())


@pytest.mark.parametrize(
    ("params", "sql", "complaint"),
    [
        ("a", "SELECT $1, $2", r"declares 1 parameter\(s\) \('a',\) but its SQL uses \$1 \$2"),
        ("a, b, c", "SELECT $1, $2", r"declares 3 .* uses \$1 \$2"),
        ("a, b", "SELECT $1, $3", r"declares 2 .* uses \$1 \$3"),
        ("a, b", "SELECT 1", r"uses none"),
        ("a, a", "SELECT $1, $2", r"declares a parameter twice"),
        ("a, from", "SELECT $1, $2", r"declares parameter 'from'"),
        ("a,, b", "SELECT $1, $2", r"declares parameter ''"),
    ],
)
def test_the_loader_refuses_parameters_that_do_not_match_placeholders(
    params: str, sql: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        postgres.parse_queries(block(params, sql), "sql/x.sql")


def test_the_loader_refuses_placeholders_without_a_params_line() -> None:
    with pytest.raises(ValueError, match=r"sql/x.sql: query q declares 0"):
        postgres.parse_queries("-- name: q\nSELECT $1;\n", "sql/x.sql")


def test_the_loader_refuses_a_name_defined_twice() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        postgres.parse_queries("-- name: q\nSELECT 1;\n-- name: q\nSELECT 2;\n")


#: The tables whose rows belong to a tenant (migrations/0008_tenants.sql and after).
TENANT_TABLES = (
    "tasks",
    "queues",
    "schedules",
    "task_stats_totals",
    "task_stats_hourly",
    "task_stats_recent",
    "task_error_stats",
    "api_keys",
    "audit_events",
    "tenant_limits",
    "submit_buckets",
    "queue_starts",
    "tenant_limits",
    "submit_buckets",
    "queue_starts",
)
_READS = re.compile(r"\b(?:FROM|JOIN|UPDATE)\s+(" + "|".join(TENANT_TABLES) + r")\b", re.I)
_TENANT_CONDITION = re.compile(r"\btenant\s*=\s*\S", re.I)
_ACROSS = re.compile(r"^--\s*tenant:\s*(\S.*)$", re.M)


def _code(sql: str) -> str:
    return "\n".join(line.split("--")[0] for line in sql.splitlines())


@pytest.mark.parametrize("name", sorted(postgres.QUERIES))
def test_every_query_names_the_tenant_or_says_why_not(name: str) -> None:
    """Each statement that reads or changes a tenant's rows names the tenant
    (a `tenant`/`tenants` parameter, and a tenant condition for every table it
    reads or updates); a statement that works across tenants (claims, leases,
    upkeep, the operator's metrics) says why on a `-- tenant:` line."""
    query = postgres.QUERIES[name]
    across = _ACROSS.search(query.sql)
    if across:
        assert len(across.group(1)) > 10, f"{name}: say why it works across tenants"
        return
    code = _code(query.sql)
    tables = _READS.findall(code)
    written = re.search(r"\bINSERT\s+INTO\s+(" + "|".join(TENANT_TABLES) + r")\b", code, re.I)
    assert tables or written, f"{name} touches no tenant's table: mark it `-- tenant: <why>`"
    tenant_params = [p for p in query.params if p == "tenant" or p.endswith("tenants")]
    assert tenant_params, f"{name} takes no tenant parameter"
    for param in tenant_params:
        assert f"${query.params.index(param) + 1}" in code, f"{name}: ${param} is not used"
    conditions = len(_TENANT_CONDITION.findall(code))
    assert conditions >= len(tables), (
        f"{name} reads or updates {len(tables)} tenant table(s) ({', '.join(tables)}) "
        f"but has {conditions} tenant condition(s)"
    )
