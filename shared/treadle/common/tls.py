"""TLS between clients and the scheduler: the files, their checks, the credentials.

One scheme for every process (docs/security.md):

- `TREADLE_TLS_CERT`, `TREADLE_TLS_KEY`: the process's own certificate chain
  and private key. A scheduler serves gRPC with them; a client (a CLI
  command, the gateway's link to the scheduler) presents them when the
  scheduler asks for a client certificate.
- `TREADLE_TLS_CA`: the CA bundle a client trusts for the scheduler's
  certificate. A client speaks TLS when it is set.
- `TREADLE_TLS_CLIENT_CA`: a scheduler with it requires a client certificate
  signed by one of these CAs (mutual TLS).
- `TREADLE_TLS_SERVER_NAME`: the name a client checks in the scheduler's
  certificate, when it is not the host it dials.

The setting checks here read the files at start-up and name the variable
when one cannot be used. `ServerIdentity` gives the scheduler's gRPC server
credentials that read the files again when they change (certificate rotation
without a restart); `TLSConfig` is a client's side.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import grpc

from treadle.common.errors import InvalidArgument

log = logging.getLogger("treadle.tls")

#: A PEM value: its bytes, or the path of a file holding them.
Pem = bytes | str | os.PathLike[str]

_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
#: The scheduler's settings that name the files of `ServerIdentity`.
_SERVER_NAMES = ("TREADLE_TLS_CERT", "TREADLE_TLS_KEY", "TREADLE_TLS_CLIENT_CA")


def _read(name: str, path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{name}: cannot read {os.fspath(path)}: {exc.strerror}") from None


def _pem(name: str, value: Pem) -> bytes:
    return value if isinstance(value, bytes) else _read(name, value)


def _ssl_reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc).lower().replace("_", " ")


# -- setting checks (a variable's name and its value, a path) ------------------


def certificates(name: str, path: str) -> None:
    """The file holds one or more PEM certificates (a chain or a CA bundle)."""
    data = _read(name, path)
    if _CERTIFICATE not in data:
        raise InvalidArgument(f"{name}: {path} holds no PEM certificate ({_CERTIFICATE.decode()})")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else str(exc)
        raise InvalidArgument(f"{name}: {path} holds an unreadable certificate: {reason}") from None


def private_key(name: str, path: str) -> None:
    """The file holds an unencrypted PEM private key."""
    data = _read(name, path)
    if b"PRIVATE KEY-----" not in data:
        raise InvalidArgument(f"{name}: {path} holds no PEM private key")
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data:
        raise InvalidArgument(
            f"{name}: {path} holds an encrypted private key; gRPC needs it unencrypted "
            "(keep the file readable by the service's user only)"
        )


def key_pair(cert_name: str, cert: str | None, key_name: str, key: str | None) -> None:
    """Both set or both unset, and the key is the certificate's."""
    if (cert is None) != (key is None):
        given, missing = (cert_name, key_name) if key is None else (key_name, cert_name)
        raise InvalidArgument(f"{given} is set but {missing} is not: they go together")
    if cert is None or key is None:
        return

    def no_password() -> bytes:
        raise InvalidArgument(f"{key_name}: {key} is encrypted; gRPC needs it unencrypted")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=no_password)
    except ssl.SSLError as exc:
        raise InvalidArgument(
            f"{key_name} ({key}) is not the private key of {cert_name} ({cert}): {_ssl_reason(exc)}"
        ) from None
    except OSError as exc:
        raise InvalidArgument(f"{cert_name}, {key_name}: cannot read them: {exc}") from None


# -- the scheduler's side --------------------------------------------------------


class ServerIdentity:
    """The scheduler's certificate chain and key (and, for mutual TLS, the CA
    bundle its clients' certificates must be signed by), as gRPC server
    credentials that read the files again when they change.

    gRPC asks for the files' current state at each new connection's handshake
    (`grpc.dynamic_ssl_server_credentials`); they are read (small files), and
    when their bytes differ from those in use and the new certificate and key
    match, new connections get them. Connections already open keep theirs.
    Files caught half-replaced (a new certificate beside the old key) are
    skipped with a warning, and tried again at the next handshake. Whether
    client certificates are required is fixed at start."""

    def __init__(self, cert: str, key: str, client_ca: str | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._lock = threading.Lock()
        self._files = self._read()
        self._check()
        #: Files found unusable (so not checked again at each handshake), the last warning.
        self._refused: tuple[bytes, ...] | None = None
        self._warned: str | None = None

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate."""
        return self.client_ca is not None

    def _read(self) -> tuple[bytes, ...]:
        cert_name, key_name, ca_name = _SERVER_NAMES
        files = (_read(cert_name, self.cert), _read(key_name, self.key))
        return files if self.client_ca is None else (*files, _read(ca_name, self.client_ca))

    def _check(self) -> None:
        cert_name, key_name, ca_name = _SERVER_NAMES
        certificates(cert_name, self.cert)
        private_key(key_name, self.key)
        key_pair(cert_name, self.cert, key_name, self.key)
        if self.client_ca is not None:
            certificates(ca_name, self.client_ca)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        cert, key, *ca = self._files
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=ca[0] if ca else None
        )

    def credentials(self) -> grpc.ServerCredentials:
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", self._fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), fetch, require_client_authentication=self.mutual
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration when the files changed, else None (keep the one in use).
        Called by gRPC's threads, at each handshake; never raises."""
        with self._lock:
            try:
                return self._reload()
            except Exception:  # gRPC would only log that the fetch failed
                log.exception("reading the TLS files failed: keeping the previous ones")
                return None

    def _reload(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            files = self._read()
        except InvalidArgument as exc:
            self._warn(f"{exc}: keeping the TLS files in use")
            return None
        if files in (self._files, self._refused):
            return None
        try:
            self._check()
        except InvalidArgument as exc:
            self._refused = files
            self._warn(f"TLS files changed but cannot be used ({exc}): keeping the previous ones")
            return None
        if self._read() != files:
            return None  # still being written: at the next handshake
        self._files, self._warned = files, None
        log.info("TLS files changed: new connections get the new certificate")
        return self._configuration()

    def _warn(self, message: str) -> None:
        """Log `message` once, not at every handshake while it holds."""
        if message != self._warned:
            log.warning("%s", message)
        self._warned = message


# -- a client's side ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TLSConfig:
    """How a client calls the scheduler over TLS. Each PEM value is the file's
    bytes or its path (read when the client is made).

    `ca`: the CA bundle that verifies the scheduler's certificate (None: the
    public roots gRPC ships). `cert` and `key`: the client's own certificate
    chain and private key, for a scheduler that requires them (mutual TLS).
    `server_name`: the name the scheduler's certificate must hold, when it is
    not the host of the address dialed (a certificate for `scheduler.internal`
    reached at `10.0.0.5:50051`)."""

    ca: Pem | None = None
    cert: Pem | None = None
    key: Pem | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise InvalidArgument("TLSConfig: cert and key go together")

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials; raises `InvalidArgument` for a file it cannot read."""
        return grpc.ssl_channel_credentials(
            root_certificates=None if self.ca is None else _pem("TLS CA", self.ca),
            private_key=None if self.key is None else _pem("TLS key", self.key),
            certificate_chain=None if self.cert is None else _pem("TLS certificate", self.cert),
        )

    def options(self) -> list[tuple[str, str]]:
        """Channel options: the name checked in the server's certificate, when given."""
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]
