"""Where a client's channel connects: one address, or every replica of a list.

gRPC balances a channel's calls over every address its target resolves to
(`round_robin`, set in the client's service config) and leaves out the ones
it cannot reach, so a replica that stops takes no more calls:

- `host:port` (or `dns:///host:port`): every address the name resolves to,
  resolved again when connections fail: a Kubernetes headless Service, a
  compose service with several replicas;
- `10.0.0.1:50051,10.0.0.2:50051`: each of a fixed list of IP addresses
  (gRPC's `ipv4:` / `ipv6:` targets); host names there are refused, since a
  list is never resolved again: use one DNS name that resolves to them all;
- any other gRPC target (`unix:/path`, `ipv4:...`) as it is.
"""

from __future__ import annotations

import ipaddress

from treadle.common.errors import InvalidArgument


def _ip_port(item: str, address: str, name: str) -> tuple[int, str]:
    """(IP version, `ip:port` as gRPC writes it) of one item of a list."""
    host, _, port = item.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        ip = None
    if (
        ip is None
        or (ip.version == 6) != bracketed
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        raise InvalidArgument(
            f"{name} {address!r}: {item!r} is not ip:port ([ipv6]:port); a "
            "comma-separated list takes IP addresses, as it is never resolved again: for "
            "host names give one DNS name that resolves to every replica (gRPC balances "
            "over all of its addresses)"
        )
    return ip.version, f"[{ip}]:{int(port)}" if ip.version == 6 else f"{ip}:{int(port)}"


def target(address: str, name: str = "scheduler address") -> str:
    """The gRPC target for `address` (one address, or a comma-separated list);
    `name` names the setting in errors."""
    address = address.strip()
    if "," not in address:
        return address
    items = [_ip_port(item.strip(), address, name) for item in address.split(",")]
    versions = {version for version, _ in items}
    if len(versions) > 1:
        raise InvalidArgument(f"{name} {address!r} mixes IPv4 and IPv6 addresses; give one kind")
    return f"ipv{versions.pop()}:{','.join(hostport for _, hostport in items)}"


def check(name: str, value: str) -> None:
    """A settings check (`config.setting`): `value` is a valid address."""
    target(value, name)
