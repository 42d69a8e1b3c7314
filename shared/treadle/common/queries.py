"""Named SQL statements: the blocks of a `.sql` file, each under a `-- name:`
line, declaring its parameters in $1..$n order on `-- params:` lines (a long
list goes on over several), bound by name:

    -- name: get_task
    -- params: tenant, submitted_by, id
    SELECT * FROM tasks WHERE tenant = $1 AND ...

The scheduler's stores run every statement of its `sql/` this way
(`treadle.scheduler.postgres`), and the client's `enqueue` the scheduler's
own submit statement: the parser knows no driver.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_PARAMS = re.compile(r"^-- params:(.*)$", re.MULTILINE)
_COMMENT = re.compile(r"--.*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class Query:
    """A named block of `sql/*.sql`: its text, and its parameters' names in
    $1..$n order."""

    name: str
    sql: str
    params: tuple[str, ...] = ()

    def args(self, /, **values: Any) -> list[Any]:
        """The statement's positional arguments, taken from `values` by name.
        Raises TypeError when a parameter is missing or a name is not one."""
        if values.keys() != set(self.params):
            missing = [p for p in self.params if p not in values]
            unknown = sorted(values.keys() - set(self.params))
            raise TypeError(f"query {self.name}: missing {missing}, unknown {unknown}")
        return [values[p] for p in self.params]


def parse_queries(text: str, source: str = "sql") -> dict[str, Query]:
    """The named blocks of one SQL file, by name. Raises ValueError for a block
    whose `-- params:` lines do not match the $n placeholders its SQL uses (as
    many, numbered 1..n), or that names a parameter twice."""
    parts = _NAME.split(text)
    queries: dict[str, Query] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = body.strip()
        declared = ",".join(line.strip().rstrip(",") for line in _PARAMS.findall(sql))
        params = tuple(p.strip() for p in declared.split(",")) if declared else ()
        for param in params:
            if not param.isidentifier() or keyword.iskeyword(param):
                raise ValueError(f"{source}: query {name} declares parameter {param!r}")
        if len(set(params)) != len(params):
            raise ValueError(f"{source}: query {name} declares a parameter twice: {params}")
        used = {int(n) for n in _PLACEHOLDER.findall(_COMMENT.sub("", sql))}
        if used != set(range(1, len(params) + 1)):
            raise ValueError(
                f"{source}: query {name} declares {len(params)} parameter(s) {params} "
                f"but its SQL uses {' '.join(f'${n}' for n in sorted(used)) or 'none'}"
            )
        if name in queries:
            raise ValueError(f"{source}: query {name} is defined twice")
        queries[name] = Query(name, sql, params)
    return queries
