"""Who may reach a Treadle process: its authentication settings, the secure
default on the addresses it listens on, and the credential a caller sends.

`AccessSettings` is shared by the scheduler, the gateway and `treadle up`
(like `LogSettings`):

- `TREADLE_AUTH` (`--auth`): `keys`, every call to the scheduler must carry
  an API key (`authorization: Bearer trdl_…`, gRPC metadata or HTTP header);
  `none` (the default), no key is asked for and every call may do anything.
- `TREADLE_INSECURE_NO_AUTH` (`--insecure-no-auth`): with `none`, listen on an
  address other than loopback anyway. Without it such a start is refused
  (`check_exposure`): an open scheduler on a network is one anybody can use.
- `TREADLE_API_KEY` (`--api-key`): the key a client command (`treadle submit`,
  `get`, `queue …`) sends.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Mapping

from treadle.common import config
from treadle.common.errors import InvalidArgument

log = logging.getLogger("treadle.access")

#: What TREADLE_AUTH may be.
KEYS = "keys"
NONE = "none"
#: The metadata key (gRPC) and header (HTTP) a credential travels in, and its scheme.
HEADER = "authorization"
SCHEME = "Bearer"
#: The flag that lets a process without authentication listen beyond loopback.
INSECURE_FLAG = "--insecure-no-auth"


@dataclasses.dataclass(frozen=True)
class AccessSettings:
    """Authentication, shared by the scheduler, the gateway and the client commands."""

    #: `keys`: every scheduler call needs an API key; `none`: nobody is asked.
    auth: str = config.setting(
        NONE,
        choices=(KEYS, NONE),
        flags="auth",
        help="keys: every call needs an API key (`treadle keys create`); "
        "none: no authentication, loopback only ({env}, default {default})",
    )
    #: With `auth=none`, listen on a non-loopback address anyway.
    insecure_no_auth: bool = config.setting(
        False,
        flags="auth",
        help="with --auth none, listen on addresses other than loopback anyway: "
        "anyone who reaches the port can do anything ({env})",
    )
    #: The API key client commands send.
    api_key: str | None = config.setting(
        None,
        flags="api_key",
        help="API key to send as `authorization: Bearer` ({env})",
    )

    @property
    def keys(self) -> bool:
        """Whether API keys are required."""
        return self.auth == KEYS


def is_loopback(host: str) -> bool:
    """Whether `host` (a listen address) is reachable from this machine only:
    `localhost`, 127.0.0.0/8 or ::1. Any other name or address counts as
    exposed (names are not resolved: `0.0.0.0`, `::` and a host name are not
    loopback)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: AccessSettings, listens: Mapping[str, str]) -> None:
    """Refuse to listen without authentication on an address beyond loopback.

    `listens` maps what listens, as the user sets it (`--grpc-host`), to its
    host. With TREADLE_AUTH=keys anything goes; with `none`, every host must be
    loopback unless TREADLE_INSECURE_NO_AUTH is set (then it is logged loudly)."""
    if settings.keys:
        return
    exposed = {what: host for what, host in listens.items() if not is_loopback(host)}
    if not exposed:
        return
    where = ", ".join(f"{host} ({what})" for what, host in exposed.items())
    if settings.insecure_no_auth:
        log.warning(
            "authentication is OFF and %s is not loopback: anyone who reaches it can do "
            "anything (%s was given)",
            where,
            INSECURE_FLAG,
        )
        return
    raise InvalidArgument(
        f"refusing to listen on {where} without authentication: set TREADLE_AUTH=keys "
        f"(--auth keys; create a key with `treadle keys create`), listen on 127.0.0.1, "
        f"or pass {INSECURE_FLAG} (TREADLE_INSECURE_NO_AUTH=1) to run open anyway"
    )


def describe(settings: AccessSettings) -> str:
    """The `auth` line of a service's banner."""
    if settings.keys:
        return "API keys required (TREADLE_AUTH=keys)"
    return "OFF: anyone who can reach these ports can submit tasks (local use only)"


def bearer(token: str) -> tuple[str, str]:
    """The metadata pair that carries `token`."""
    return (HEADER, f"{SCHEME} {token}")


def key_of(header: str | None) -> str | None:
    """The API key an HTTP `authorization` value (or a WebSocket
    `connection_init` payload's) carries: `Bearer <key>`. A value in another
    form is passed on as it is, for the scheduler (the one place that decides)
    to refuse; None when there is none."""
    if not header or not header.strip():
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == SCHEME.lower() and token.strip():
        return token.strip()
    return header.strip()
