"""Settings: checks kept on the fields, flags made from them, installed classes."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from treadle.common import config
from treadle.common.errors import InvalidArgument
from treadle.common.logs import LogSettings
from treadle.gateway.settings import Settings as GatewaySettings
from treadle.scheduler.settings import Settings as SchedulerSettings


def test_every_settings_class_is_installed() -> None:
    assert {SchedulerSettings, GatewaySettings, LogSettings} <= set(config.installed())


def test_a_variable_of_an_installed_class_is_known_to_every_process() -> None:
    # The scheduler's own classes do not read TREADLE_HTTP_PORT; the installed
    # gateway settings do, so a replica accepts it (and refuses a typo).
    config.check_unknown({"TREADLE_HTTP_PORT": "8000"}, [SchedulerSettings, LogSettings])
    with pytest.raises(InvalidArgument, match=r"unknown setting TREADLE_HTTP_PROT; .*HTTP_PORT"):
        config.check_unknown({"TREADLE_HTTP_PROT": "8000"}, [SchedulerSettings, LogSettings])


def test_the_test_suites_variables_are_known() -> None:
    # CI exports TREADLE_TEST_REQUIRE_*; every command a test runs inherits them.
    config.check_unknown(
        {"TREADLE_TEST_REQUIRE_BROWSER": "1", "TREADLE_TEST_DATABASE_URL": "x"},
        [SchedulerSettings, LogSettings],
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TREADLE_CONCURRENCY": "0"}, "TREADLE_CONCURRENCY must be positive, got 0"),
        ({"TREADLE_MAX_RECLAIMS": "-1"}, "TREADLE_MAX_RECLAIMS must not be negative"),
        ({"TREADLE_GRPC_PORT": "70000"}, "TREADLE_GRPC_PORT out of range: 70000"),
        ({"TREADLE_DATABASE_SCHEMA": "X"}, "TREADLE_DATABASE_SCHEMA must be a lower-case"),
        ({"TREADLE_ALERT_WINDOW_SECONDS": "7200"}, "must be at most 3600"),
        ({"TREADLE_HEARTBEAT_INTERVAL": "40"}, "must be shorter than TREADLE_LEASE_SECONDS"),
    ],
)
def test_scheduler_checks_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        config.load(SchedulerSettings, env)


def test_flags_come_from_the_fields() -> None:
    parser = argparse.ArgumentParser()
    config.add_flags(parser, SchedulerSettings, "scheduler")
    args = parser.parse_args(["--grpc-port", "1234", "--drain-timeout", "2.5"])
    settings = config.load(SchedulerSettings, {"TREADLE_GRPC_PORT": "1"}, vars(args))
    assert (settings.grpc_port, settings.drain_timeout) == (1234, 2.5)
    assert "(TREADLE_DRAIN_TIMEOUT, default 30)" in parser.format_help()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TREADLE_POLL_INTERVAL": "nan"}, "TREADLE_POLL_INTERVAL must be a finite number"),
        ({"TREADLE_LEASE_SECONDS": "inf"}, "TREADLE_LEASE_SECONDS must be a finite number"),
        ({"TREADLE_DRAIN_TIMEOUT": "-inf"}, "TREADLE_DRAIN_TIMEOUT must be a finite number"),
        ({"TREADLE_ALERT_ERROR_RATE": "NaN"}, "TREADLE_ALERT_ERROR_RATE must be a finite"),
        ({"TREADLE_CONCURRENCY": "-1"}, "TREADLE_CONCURRENCY must be positive, got -1"),
        ({"TREADLE_MAX_PAYLOAD_DEPTH": "0"}, "TREADLE_MAX_PAYLOAD_DEPTH must be positive"),
        ({"TREADLE_MAX_PAYLOAD_DEPTH": "501"}, "TREADLE_MAX_PAYLOAD_DEPTH must be at most 500"),
        ({"TREADLE_LEASE_SECONDS": "1e300"}, "TREADLE_LEASE_SECONDS must be at most"),
        ({"TREADLE_RETENTION_SECONDS": "1e12"}, "TREADLE_RETENTION_SECONDS must be at most"),
        ({"TREADLE_POLL_INTERVAL": "1e18"}, "TREADLE_POLL_INTERVAL must be at most"),
    ],
)
def test_non_finite_and_out_of_range_settings_are_refused(
    env: dict[str, str], message: str
) -> None:
    """NaN passes every comparison (`positive` included): floats are checked finite first."""
    with pytest.raises(InvalidArgument, match=message):
        config.load(SchedulerSettings, env)


def test_non_finite_flag_values_are_refused() -> None:
    parser = argparse.ArgumentParser()
    config.add_flags(parser, SchedulerSettings, "scheduler")
    args = parser.parse_args(["--drain-timeout", "nan"])
    with pytest.raises(InvalidArgument, match="TREADLE_DRAIN_TIMEOUT must be a finite number"):
        config.load(SchedulerSettings, {}, vars(args))


def test_gateway_float_settings_are_finite() -> None:
    float_fields = [
        f.name for f in dataclasses.fields(GatewaySettings) if f.type in (float, "float")
    ]
    assert float_fields, "the gateway has float settings"
    for name in float_fields:
        variable = config.env_name(name)
        with pytest.raises(InvalidArgument, match=f"{variable} must be a finite number"):
            config.load(GatewaySettings, {variable: "nan"})


def test_the_grpc_message_limits_are_one_setting_for_scheduler_and_gateway() -> None:
    """A replica reads its request and response limits from the variables the
    gateway reads for its channel, so `treadle up` sets both ends at once."""
    env = {"TREADLE_GRPC_MAX_REQUEST_BYTES": "1000", "TREADLE_GRPC_MAX_RESPONSE_BYTES": "2000"}
    scheduler = config.load(SchedulerSettings, env)
    gateway = config.load(GatewaySettings, env)
    assert (scheduler.grpc_max_request_bytes, scheduler.grpc_max_response_bytes) == (1000, 2000)
    assert (gateway.grpc_max_request_bytes, gateway.grpc_max_response_bytes) == (1000, 2000)
    with pytest.raises(InvalidArgument, match="TREADLE_GRPC_MAX_CONCURRENT_STREAMS must be"):
        config.load(SchedulerSettings, {"TREADLE_GRPC_MAX_CONCURRENT_STREAMS": "0"})
    with pytest.raises(InvalidArgument, match="TREADLE_GRPC_MAX_RESPONSE_BYTES must be at most"):
        config.load(GatewaySettings, {"TREADLE_GRPC_MAX_RESPONSE_BYTES": str(2**31)})
