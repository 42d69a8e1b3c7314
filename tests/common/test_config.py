"""Settings: checks kept on the fields, flags made from them, installed classes."""

from __future__ import annotations

import argparse

import pytest

from treadle.common import config
from treadle.common.errors import InvalidArgument
from treadle.common.logs import LogSettings
from treadle.gateway.settings import Settings as GatewaySettings
from treadle.scheduler.settings import Settings as SchedulerSettings


def test_every_settings_class_is_installed() -> None:
    assert {SchedulerSettings, GatewaySettings, LogSettings} <= set(config.installed())


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
