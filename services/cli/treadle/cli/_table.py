"""Tables for people, by tabulate: columns as wide as their widest cell (colour
codes take no room), two spaces apart (`treadle tasks`, `stats`, `keys list`,
`audit`, ...)."""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence

import tabulate as _tabulate
from tabulate import tabulate

# A header as wide as its name, like any cell: tabulate adds 2 by default, which
# makes the 13 columns of `treadle stats` 26 characters wider than they need be.
_tabulate.MIN_PADDING = 0


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    right: Container[int] = (),
    rule: bool = False,
) -> str:
    """`rows` under `headers` (with `rule`, a line of dashes between); the columns
    numbered in `right` aligned right, the others left. Cells are shown as given
    (no number parsing: an id stays as it is)."""
    return tabulate(
        [list(row) for row in rows],
        headers=list(headers),
        tablefmt="simple" if rule else "plain",
        colalign=["right" if i in right else "left" for i in range(len(headers))],
        disable_numparse=True,
    )
