"""Certificates made at test time (trustme), written to files as the settings take them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trustme


@dataclasses.dataclass(frozen=True)
class Identity:
    """A certificate chain and its private key, as PEM files."""

    cert: Path
    key: Path


def issue(ca: trustme.CA, folder: Path, name: str, *hosts: str) -> Identity:
    """A certificate `ca` signs for `hosts` (client and server use both), in `folder`."""
    issued = ca.issue_cert(*hosts)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    issued.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return Identity(cert, key)


@dataclasses.dataclass(frozen=True)
class Pki:
    """A CA, the scheduler's certificate it signed (for localhost and 127.0.0.1),
    a client certificate it signed, and one signed by another CA."""

    ca: Path
    server: Identity
    client: Identity
    other_ca: Path
    stranger: Identity

    @classmethod
    def make(cls, folder: Path) -> Pki:
        folder.mkdir(parents=True, exist_ok=True)
        ca, other = trustme.CA(), trustme.CA()
        ca.cert_pem.write_to_path(str(folder / "ca.pem"))
        other.cert_pem.write_to_path(str(folder / "other-ca.pem"))
        return cls(
            ca=folder / "ca.pem",
            server=issue(ca, folder, "server", "localhost", "127.0.0.1"),
            client=issue(ca, folder, "client", "client.example"),
            other_ca=folder / "other-ca.pem",
            stranger=issue(other, folder, "stranger", "stranger.example"),
        )
