"""The gateway's settings: one frozen object, read once in `__main__`.

Each field carries its own checks and, where the command line has one, its
flag (`config.setting`); `validate` holds the rules that join fields.

The scheduler's address and the TLS settings of the link to it are also
those of every client command (`treadle submit`, ...): flags `address`,
`tls-trust` (the CA, the name to check) and `tls-identity` (the client's own
certificate, shared with the scheduler's settings in `treadle up`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from urllib.parse import urlsplit

from treadle.common import grpc_limits, target, tls
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
    #: HTTPS: the gateway's certificate chain and private key (PEM files); unset: HTTP.
    http_tls_cert: str | None = setting(
        None,
        checks=(tls.certificates,),
        flags="gateway",
        help="serve HTTPS with this certificate chain, PEM; needs --http-tls-key ({env})",
    )
    http_tls_key: str | None = setting(
        None,
        checks=(tls.private_key,),
        flags="gateway",
        help="the private key of --http-tls-cert, PEM, unencrypted ({env})",
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
    #: The scheduler replicas: a gRPC target such as host:port (a DNS name that
    #: resolves to every replica reaches them all), or a comma-separated list of
    #: ip:port (`treadle.common.target`). Client commands (`treadle submit`, ...)
    #: take the same flag and variable.
    scheduler_address: str = setting(
        "127.0.0.1:50051",
        checks=(not_empty, target.check),
        flags="address",
        flag="--address",
        help="scheduler gRPC address: host:port (calls go round every address the "
        "name resolves to) or ip:port,ip:port,... ({env}, default {default})",
    )
    #: TLS to the scheduler: the CA bundle that verifies its certificate (TLS
    #: is on when set), and the name to check in it when not the address's host.
    tls_ca: str | None = setting(
        None,
        checks=(tls.certificates,),
        flags="tls-trust",
        help="call the scheduler over TLS, trusting this CA bundle, PEM ({env})",
    )
    tls_server_name: str | None = setting(
        None,
        checks=(not_empty,),
        flags="tls-trust",
        help="the name the scheduler's certificate must hold "
        "(default: the host of the address) ({env})",
    )
    #: The client's own certificate chain and key, for a scheduler that requires one.
    tls_cert: str | None = setting(
        None,
        checks=(tls.certificates,),
        flags="tls-identity",
        help="client certificate chain, PEM, shown to a scheduler that requires one "
        "(mutual TLS); needs --tls-key and --tls-ca ({env})",
    )
    tls_key: str | None = setting(
        None,
        checks=(tls.private_key,),
        flags="tls-identity",
        help="the private key of --tls-cert, PEM, unencrypted ({env})",
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

    def validate(self) -> None:
        """The rules that join fields (each field's own are on the field)."""
        tls.key_pair(
            "TREADLE_HTTP_TLS_CERT", self.http_tls_cert, "TREADLE_HTTP_TLS_KEY", self.http_tls_key
        )
        tls.key_pair("TREADLE_TLS_CERT", self.tls_cert, "TREADLE_TLS_KEY", self.tls_key)
        if self.tls_ca is None:
            given = [
                name
                for name, value in (
                    ("TREADLE_TLS_CERT", self.tls_cert),
                    ("TREADLE_TLS_SERVER_NAME", self.tls_server_name),
                )
                if value is not None
            ]
            if given:
                raise InvalidArgument(
                    f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} "
                    "TREADLE_TLS_CA: calls to the scheduler use "
                    "TLS when TREADLE_TLS_CA names the CA bundle that verifies its certificate"
                )

    @property
    def scheduler_tls(self) -> tls.TLSConfig | None:
        """How to call the scheduler over TLS; None: plaintext."""
        if self.tls_ca is None:
            return None
        return tls.TLSConfig(
            ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key, server_name=self.tls_server_name
        )

    @property
    def https(self) -> bool:
        return self.http_tls_cert is not None

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
