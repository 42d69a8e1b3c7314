"""Conversions between the public statistics types and protobuf, used only at the edges.

Each type has a `wire.Codec`; what its rules do not cover is given here: the
count of tasks by state (a map sent as a list), the trend granularity's
default, and the alert's time (`at`, sent as `time`).
"""

from __future__ import annotations

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.common import stats, wire
from treadle.common.tasks import TaskState


def granularity_to_proto(value: stats.Granularity) -> pb.Granularity.ValueType:
    return pb.Granularity.Value(f"GRANULARITY_{value.value}")


def granularity_from_proto(value: pb.Granularity.ValueType) -> stats.Granularity:
    found = wire.enum_from_proto(stats.Granularity, pb.Granularity.DESCRIPTOR, value, "granularity")
    return stats.Granularity.HOUR if found is None else found


def _states_to_proto(by_state: dict[TaskState, int]) -> list[pb.StateCount]:
    return [
        pb.StateCount(state=wire.state_to_proto(state), count=count)
        for state, count in by_state.items()
    ]


def _states_from_proto(msg: pb.Overview) -> dict[TaskState, int]:
    by_state = {wire.state_from_proto(item.state): item.count for item in msg.tasks_by_state}
    return {state: count for state, count in by_state.items() if state is not None}


_QUEUE_STATS = wire.Codec(stats.QueueStats, pb.QueueStats)
_OVERVIEW = wire.Codec(
    stats.Overview,
    pb.Overview,
    encode={"tasks_by_state": _states_to_proto},
    decode={"tasks_by_state": _states_from_proto},
)
_BUCKET = wire.Codec(stats.TrendBucket, pb.TrendBucket)
_TRENDS = wire.Codec(
    stats.Trends,
    pb.GetTrendsResponse,
    decode={"granularity": lambda m: granularity_from_proto(m.granularity)},
)
_PATTERN = wire.Codec(stats.ErrorPattern, pb.ErrorPattern)
_ALERT = wire.Codec(stats.Alert, pb.Alert, rename={"at": "time"})
_HEALTH = wire.Codec(stats.SystemHealth, pb.GetSystemHealthResponse)

queue_stats_to_proto = _QUEUE_STATS.to_proto
queue_stats_from_proto = _QUEUE_STATS.from_proto
overview_to_proto = _OVERVIEW.to_proto
overview_from_proto = _OVERVIEW.from_proto
trends_to_proto = _TRENDS.to_proto
pattern_to_proto = _PATTERN.to_proto
pattern_from_proto = _PATTERN.from_proto
system_health_to_proto = _HEALTH.to_proto
system_health_from_proto = _HEALTH.from_proto


def trends_from_proto(msg: pb.GetTrendsResponse, queues: tuple[str, ...]) -> stats.Trends:
    """The trends in `msg`, counted over `queues` (the request's: the reply omits them)."""
    return _TRENDS.from_proto(msg, queues=queues)
