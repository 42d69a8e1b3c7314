"""The gateway's settings: one frozen object, read once in `__main__`.

Each field carries its own checks and, where the command line has one, its
flag (`config.setting`).
"""

from __future__ import annotations

import dataclasses
import ipaddress

from treadle.common import grpc_limits
from treadle.common.config import at_most, not_empty, port, positive, setting


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
    #: The scheduler's gRPC message limits (the variables a replica reads too):
    #: the gateway sends no larger request and accepts any response up to the
    #: larger size (`treadle.common.grpc_limits`).
    grpc_max_request_bytes: int = setting(
        grpc_limits.MAX_REQUEST_BYTES, checks=(positive, at_most(grpc_limits.LARGEST))
    )
    grpc_max_response_bytes: int = setting(
        grpc_limits.MAX_RESPONSE_BYTES, checks=(positive, at_most(grpc_limits.LARGEST))
    )

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
