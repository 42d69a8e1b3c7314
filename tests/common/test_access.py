"""Secure defaults: without authentication nothing listens beyond loopback
unless --insecure-no-auth says so, and the refusal names that flag."""

from __future__ import annotations

import argparse
import logging

import pytest

from treadle.common import access, config
from treadle.common.access import AccessSettings
from treadle.common.errors import InvalidArgument


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("192.168.1.2", False),
        ("scheduler.internal", False),
        ("", False),
    ],
)
def test_only_loopback_counts_as_loopback(host: str, loopback: bool) -> None:
    assert access.is_loopback(host) is loopback


def test_no_auth_beyond_loopback_is_refused_naming_the_flag() -> None:
    with pytest.raises(InvalidArgument) as raised:
        access.check_exposure(AccessSettings(), {"--grpc-host": "0.0.0.0", "--http-host": "::1"})
    message = raised.value.message
    assert message.startswith("refusing to listen on 0.0.0.0 (--grpc-host) without authentication")
    assert "--insecure-no-auth" in message and "TREADLE_AUTH=keys" in message
    assert "::1" not in message


def test_loopback_keys_or_the_flag_let_it_start(caplog: pytest.LogCaptureFixture) -> None:
    access.check_exposure(AccessSettings(), {"--grpc-host": "127.0.0.1"})
    access.check_exposure(AccessSettings(auth="keys"), {"--grpc-host": "0.0.0.0"})
    with caplog.at_level(logging.WARNING, "treadle.access"):
        access.check_exposure(AccessSettings(insecure_no_auth=True), {"--http-host": "0.0.0.0"})
    assert "authentication is OFF and 0.0.0.0 (--http-host) is not loopback" in caplog.text


def test_settings_come_from_variables_and_flags() -> None:
    parser = argparse.ArgumentParser()
    config.add_flags(parser, AccessSettings, "auth")
    config.add_flags(parser, AccessSettings, "api_key")
    none = vars(parser.parse_args([]))
    assert config.load(AccessSettings, {}, none) == AccessSettings("none", False, None)
    env = {"TREADLE_AUTH": "keys", "TREADLE_INSECURE_NO_AUTH": "1", "TREADLE_API_KEY": "trdl_x"}
    assert config.load(AccessSettings, env, none) == AccessSettings("keys", True, "trdl_x")
    given = vars(parser.parse_args(["--auth", "keys", "--insecure-no-auth", "--api-key", "k"]))
    assert config.load(AccessSettings, {}, given) == AccessSettings("keys", True, "k")
    with pytest.raises(InvalidArgument, match="TREADLE_AUTH must be keys or none, got 'on'"):
        config.load(AccessSettings, {"TREADLE_AUTH": "on"}, none)
    with pytest.raises(SystemExit):
        parser.parse_args(["--auth", "maybe"])
