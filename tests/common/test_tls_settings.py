"""TLS settings: each file is read and checked at start-up, and an error names its variable."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from tls_files import Pki

from treadle.common import config
from treadle.common.errors import InvalidArgument
from treadle.common.tls import TLSConfig
from treadle.gateway.settings import Settings as GatewaySettings
from treadle.scheduler.settings import Settings as SchedulerSettings


def _encrypted_copy(key: Path, to: Path) -> Path:
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    to.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return to


def test_the_scheduler_takes_a_certificate_key_and_client_ca(pki: Pki) -> None:
    env = {
        "TREADLE_TLS_CERT": str(pki.server.cert),
        "TREADLE_TLS_KEY": str(pki.server.key),
        "TREADLE_TLS_CLIENT_CA": str(pki.ca),
    }
    settings = config.load(SchedulerSettings, env)
    assert (settings.tls_cert, settings.tls_key, settings.tls_client_ca) == tuple(env.values())
    assert config.load(SchedulerSettings, {}).tls_cert is None  # plaintext by default


def test_scheduler_tls_flags_come_from_the_settings(pki: Pki) -> None:
    parser = argparse.ArgumentParser()
    config.add_flags(parser, SchedulerSettings, "tls")
    args = parser.parse_args(["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)])
    settings = config.load(SchedulerSettings, {}, vars(args))
    assert settings.tls_cert == str(pki.server.cert)
    assert "(TREADLE_TLS_CLIENT_CA)" in parser.format_help()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"cert": "server.cert"}, "TREADLE_TLS_CERT is set but TREADLE_TLS_KEY is not"),
        ({"key": "server.key"}, "TREADLE_TLS_KEY is set but TREADLE_TLS_CERT is not"),
        ({"client_ca": "ca"}, "TREADLE_TLS_CLIENT_CA needs TREADLE_TLS_CERT and TREADLE_TLS_KEY"),
        (
            {"cert": "missing", "key": "server.key"},
            r"TREADLE_TLS_CERT: cannot read .*missing\.pem: No such file or directory",
        ),
        ({"cert": "server.key", "key": "server.key"}, "TREADLE_TLS_CERT: .* holds no PEM cert"),
        ({"cert": "server.cert", "key": "server.cert"}, "TREADLE_TLS_KEY: .* holds no PEM private"),
        (
            {"cert": "server.cert", "key": "client.key"},
            r"TREADLE_TLS_KEY \(.*client\.key\) is not the private key of TREADLE_TLS_CERT",
        ),
        (
            {"cert": "server.cert", "key": "server.key", "client_ca": "garbage"},
            "TREADLE_TLS_CLIENT_CA: .* holds an unreadable certificate",
        ),
        (
            {"cert": "server.cert", "key": "encrypted"},
            "TREADLE_TLS_KEY: .* holds an encrypted private key",
        ),
    ],
)
def test_bad_scheduler_tls_settings_name_the_variable(
    pki: Pki, tmp_path: Path, given: dict[str, str], message: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    files = {
        "server.cert": pki.server.cert,
        "server.key": pki.server.key,
        "client.key": pki.client.key,
        "ca": pki.ca,
        "missing": tmp_path / "missing.pem",
        "garbage": garbage,
        "encrypted": _encrypted_copy(pki.server.key, tmp_path / "encrypted.key"),
    }
    env = {f"TREADLE_TLS_{k.upper()}": str(files[v]) for k, v in given.items()}
    with pytest.raises(InvalidArgument, match=message):
        config.load(SchedulerSettings, env)


def test_the_gateway_link_and_https_settings(pki: Pki) -> None:
    env = {
        "TREADLE_TLS_CA": str(pki.ca),
        "TREADLE_TLS_CERT": str(pki.client.cert),
        "TREADLE_TLS_KEY": str(pki.client.key),
        "TREADLE_TLS_SERVER_NAME": "localhost",
        "TREADLE_HTTP_TLS_CERT": str(pki.server.cert),
        "TREADLE_HTTP_TLS_KEY": str(pki.server.key),
    }
    settings = config.load(GatewaySettings, env)
    assert settings.scheduler_tls == TLSConfig(
        ca=str(pki.ca), cert=str(pki.client.cert), key=str(pki.client.key), server_name="localhost"
    )
    assert settings.https
    plain = config.load(GatewaySettings, {})
    assert plain.scheduler_tls is None and not plain.https


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TREADLE_TLS_CERT": "client.cert", "TREADLE_TLS_KEY": "client.key"},
            "TREADLE_TLS_CERT needs TREADLE_TLS_CA: calls to the scheduler use TLS when",
        ),
        ({"TREADLE_TLS_SERVER_NAME": "x"}, "TREADLE_TLS_SERVER_NAME needs TREADLE_TLS_CA"),
        (
            {"TREADLE_TLS_CA": "ca", "TREADLE_TLS_KEY": "client.key"},
            "TREADLE_TLS_KEY is set but TREADLE_TLS_CERT is not",
        ),
        (
            {"TREADLE_HTTP_TLS_CERT": "client.cert"},
            "TREADLE_HTTP_TLS_CERT is set but TREADLE_HTTP_TLS_KEY is not",
        ),
        ({"TREADLE_TLS_CA": "client.key"}, "TREADLE_TLS_CA: .* holds no PEM certificate"),
    ],
)
def test_bad_gateway_tls_settings_name_the_variable(
    pki: Pki, env: dict[str, str], message: str
) -> None:
    files = {"client.cert": pki.client.cert, "client.key": pki.client.key, "ca": pki.ca}
    env = {k: str(files.get(v, v)) for k, v in env.items()}
    with pytest.raises(InvalidArgument, match=message):
        config.load(GatewaySettings, env)


def test_tls_config_checks_what_it_can(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cert and key go together"):
        TLSConfig(ca=pki.ca, cert=pki.client.cert)
    with pytest.raises(InvalidArgument, match=r"TLS CA: cannot read .*nope\.pem"):
        TLSConfig(ca=tmp_path / "nope.pem").credentials()
    TLSConfig(ca=pki.ca.read_bytes(), cert=pki.client.cert, key=pki.client.key).credentials()
