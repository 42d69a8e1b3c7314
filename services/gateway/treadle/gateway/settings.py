"""The gateway's settings: one frozen object, read once in `__main__`.

Each field carries its own checks and, where the command line has one, its
flag (`config.setting`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from urllib.parse import urlsplit

from treadle.common import grpc_limits
from treadle.common.config import at_most, not_empty, port, positive, setting
from treadle.common.errors import InvalidArgument

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(text: str) -> str | None:
    """`text` as a browser sends it in an `Origin` header (scheme and host in
    lower case, no default port), or None when it is not an origin."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")


def origins(text: str) -> tuple[str, ...]:
    """The origins of a comma-separated list (`TREADLE_CORS_ORIGINS`), each as
    browsers send it; empty items are skipped. Refuses what is not an origin,
    `*` included."""
    found = []
    for item in filter(None, (i.strip() for i in text.split(","))):
        normal = origin(item)
        if normal is None:
            raise InvalidArgument(
                f"TREADLE_CORS_ORIGINS: {item!r} is not an origin: give each as "
                "scheme://host[:port] (such as https://app.example.com), no path, no '*'"
            )
        found.append(normal)
    return tuple(found)


def _origins(name: str, value: str) -> None:
    origins(value)


@dataclasses.dataclass(frozen=True)
class Settings:
    http_host: str = setting(
        "127.0.0.1",
        checks=(not_empty,),
        flags="gateway",
        help="HTTP listen host ({env}, default {default})",
    )
    #: 0 picks a free port (tests).
    http_port: int = setting(
        8000, checks=(port,), flags="gateway", help="HTTP listen port ({env}, default {default})"
    )
    #: GraphQL introspection (`__schema`, `__type`) and GraphiQL: `on`, `off`, or
    #: `auto`, on only when `http_host` is a loopback address (see `introspection`).
    graphql_introspection: str = setting(
        "auto",
        choices=("auto", "on", "off"),
        flags="gateway",
        help="GraphQL introspection and GraphiQL ({env}, default {default}: "
        "on for a loopback --http-host only)",
    )
    #: Any scheduler replica: a gRPC target such as host:port. Client commands
    #: (`treadle submit`, ...) take the same flag and variable.
    scheduler_address: str = setting(
        "127.0.0.1:50051",
        checks=(not_empty,),
        flags="address",
        flag="--address",
        help="scheduler gRPC address ({env}, default {default})",
    )
    #: Seconds each call to the scheduler may take.
    rpc_timeout: float = setting(10.0, checks=(positive,))
    #: Seconds `/health/detailed` waits for the scheduler's report before saying "down".
    health_timeout: float = setting(3.0, checks=(positive,))
    #: The largest HTTP request body (bytes) and WebSocket message the gateway reads;
    #: a larger body is refused with 413 before it is read whole.
    max_request_bytes: int = setting(2 * 1024 * 1024, checks=(positive,))
    #: The largest estimated cost of a GraphQL operation (`treadle.gateway.cost`;
    #: the default is `schema.MAX_COST`).
    graphql_max_cost: int = setting(10_000, checks=(positive,))
    #: Browser origins allowed to call the gateway from their pages (CORS) and to
    #: open its WebSocket: comma-separated scheme://host[:port]; empty: none.
    cors_origins: str = setting("", checks=(_origins,))
    #: The scheduler's gRPC message limits (the variables a replica reads too):
    #: the gateway sends no larger request and accepts any response up to the
    #: larger size (`treadle.common.grpc_limits`).
    grpc_max_request_bytes: int = setting(
        grpc_limits.MAX_REQUEST_BYTES, checks=(positive, at_most(grpc_limits.LARGEST))
    )
    grpc_max_response_bytes: int = setting(
        grpc_limits.MAX_RESPONSE_BYTES, checks=(positive, at_most(grpc_limits.LARGEST))
    )

    def allowed_origins(self) -> tuple[str, ...]:
        """`cors_origins`, one origin each."""
        return origins(self.cors_origins)

    def introspection(self) -> bool:
        """Whether introspection and GraphiQL are served: as asked, or with `auto`
        only on a loopback address (`127.0.0.1`, `::1`, `localhost`), so that a
        gateway exposed to a network shows its schema only when told to."""
        if self.graphql_introspection == "auto":
            return is_loopback(self.http_host)
        return self.graphql_introspection == "on"


def is_loopback(host: str) -> bool:
    """True for a loopback address or `localhost`; any other name is taken as not."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
