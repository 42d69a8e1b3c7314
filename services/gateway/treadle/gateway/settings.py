"""The gateway's settings: one frozen object, read once in `__main__`."""

from __future__ import annotations

import dataclasses

from treadle.common import config
from treadle.common.errors import InvalidArgument


@dataclasses.dataclass(frozen=True)
class Settings:
    http_host: str = "127.0.0.1"
    #: 0 picks a free port (tests).
    http_port: int = 8000
    #: Any scheduler replica: a gRPC target such as host:port.
    scheduler_address: str = "127.0.0.1:50051"
    #: Seconds each call to the scheduler may take.
    rpc_timeout: float = 10.0
    #: Seconds `/health/detailed` waits for the scheduler's report before saying "down".
    health_timeout: float = 3.0

    def validate(self) -> None:
        if not self.http_host:
            raise InvalidArgument("TREADLE_HTTP_HOST must not be empty")
        if not 0 <= self.http_port < 65536:
            raise InvalidArgument(f"TREADLE_HTTP_PORT out of range: {self.http_port}")
        if not self.scheduler_address.strip():
            raise InvalidArgument("TREADLE_SCHEDULER_ADDRESS must not be empty")
        config.positive("rpc_timeout", self.rpc_timeout)
        config.positive("health_timeout", self.health_timeout)
