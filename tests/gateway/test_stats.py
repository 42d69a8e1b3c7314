"""Statistics through GraphQL, checked exactly against the scripted workload
(see stats_support) and against the same figures read over gRPC."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import stats_support as w
from support import make_settings

from treadle.client import Client
from treadle.scheduler.settings import Settings
from treadle.scheduler.supervisor import Replica
from treadle.scheduler.tally import hour_of

from .helpers import GraphQL

QUEUE_FIELDS = """
  queue length running scheduled retrying maxConcurrent paused oldestEnqueuedAt
  totalEnqueued totalCompleted totalFailed totalDead totalCancelled
"""
STATS = f"""
query($since: DateTime!, $until: DateTime!) {{
  mixed: queueStats(queue: "s-mixed") {{ {QUEUE_FIELDS} }}
  held: queueStats(queue: "s-held") {{ {QUEUE_FIELDS} }}
  missing: queueStats(queue: "no-such-queue") {{ queue }}
  queueStatsList {{ queue totalEnqueued }}
  overview {{
    totalQueues tasksByState {{ state count }}
    finishedLastMinute finishedLastHour throughputLastMinute throughputLastHour
    errorRate avgProcessingSeconds p95ProcessingSeconds activeReplicas uptimeSeconds
    lastUpdated
  }}
  all: trends(since: $since, until: $until) {{
    since granularity buckets {{ start submitted completed failed dead cancelled }}
  }}
  ok: trends(since: $since, until: $until, queues: ["s-ok"]) {{
    buckets {{ start completed avgDurationSeconds p95DurationSeconds }}
  }}
  days: trends(granularity: DAY) {{ buckets {{ submitted }} }}
  errorPatterns {{ type message count exampleTaskIds queues lastSeenAt }}
}}
"""
HEALTH = """
{ systemHealth { status checkedAt
    alerts { severity metric message queue value threshold time replica } } }
"""


@pytest.fixture
def settings(schema: str) -> Settings:
    """Thresholds low enough that the workload raises every alert but the replica one."""
    return make_settings(
        schema,
        alert_backlog=1,
        alert_error_rate=0.2,
        alert_min_attempts=5,
        alert_slow_seconds=0.0001,
        alert_oldest_seconds=0.01,
    )


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def _query(gql: GraphQL, query: str, **variables: Any) -> dict[str, Any]:
    body = await gql(query, **variables)
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def test_statistics_match_the_workload_and_grpc(
    gql: GraphQL, client: Client, replica: Replica
) -> None:
    healthy = await _query(gql, HEALTH)
    assert healthy["systemHealth"]["status"] == "HEALTHY"
    assert healthy["systemHealth"]["alerts"] == []

    workload = await w.run(client)
    await w.settle(replica, client)
    now = datetime.now(tz=workload.held[0].run_at.tzinfo)
    since = hour_of(now) - timedelta(hours=1)
    data = await _query(gql, STATS, since=since.isoformat(), until=now.isoformat())

    mixed, held = data["mixed"], data["held"]
    assert (mixed["totalEnqueued"], mixed["totalCompleted"], mixed["totalFailed"]) == (6, 3, 7)
    assert (mixed["totalDead"], mixed["totalCancelled"], mixed["length"]) == (2, 1, 0)
    assert (held["length"], held["scheduled"], held["paused"], held["maxConcurrent"]) == (
        3,
        1,
        True,
        None,
    )
    assert _time(held["oldestEnqueuedAt"]) == workload.oldest_held
    assert data["missing"] is None
    assert data["queueStatsList"] == [
        {"queue": "default", "totalEnqueued": 0},
        {"queue": "math", "totalEnqueued": 0},
        {"queue": w.HELD, "totalEnqueued": 4},
        {"queue": w.MIXED, "totalEnqueued": 6},
        {"queue": w.OK, "totalEnqueued": 7},
    ]
    # One implementation: GraphQL says what gRPC says.
    grpc_mixed = await client.queue_stats(w.MIXED)
    assert mixed["totalFailed"] == grpc_mixed.total_failed
    assert mixed["queue"] == grpc_mixed.queue

    overview = data["overview"]
    assert overview["totalQueues"] == 5
    assert {s["state"]: s["count"] for s in overview["tasksByState"]} == {
        "QUEUED": 3,
        "SCHEDULED": 1,
        "RUNNING": 0,
        "SUCCEEDED": 10,
        "RETRYING": 0,
        "DEAD": 2,
        "CANCELLED": 1,
    }
    assert (overview["finishedLastMinute"], overview["finishedLastHour"]) == (12, 12)
    assert overview["throughputLastMinute"] == 12 / 60
    assert overview["throughputLastHour"] == 12 / 3600
    assert overview["errorRate"] == 7 / 17
    assert 0 < overview["avgProcessingSeconds"] < 1
    assert 0 < overview["p95ProcessingSeconds"] < 1
    assert overview["activeReplicas"] == 1
    assert 0 < overview["uptimeSeconds"] < 60

    trends = data["all"]
    assert trends["granularity"] == "HOUR"
    assert _time(trends["since"]) == since
    assert [_time(b["start"]) for b in trends["buckets"]] == [since, since + timedelta(hours=1)]
    totals = {
        field: sum(b[field] for b in trends["buckets"])
        for field in ("submitted", "completed", "failed", "dead", "cancelled")
    }
    assert totals == {"submitted": 17, "completed": 10, "failed": 7, "dead": 2, "cancelled": 1}
    expected = workload.ok_by_hour()
    for bucket in data["ok"]["buckets"]:
        tally = expected.get(_time(bucket["start"]))
        if tally is None:
            assert (bucket["completed"], bucket["avgDurationSeconds"]) == (0, None)
            continue
        assert bucket["completed"] == tally.duration_count
        assert bucket["avgDurationSeconds"] == pytest.approx(tally.average, abs=1e-9)
        assert bucket["p95DurationSeconds"] == pytest.approx(tally.percentile(0.95), abs=1e-9)
    assert sum(b["submitted"] for b in data["days"]["buckets"]) == 17

    patterns = data["errorPatterns"]
    assert [(p["type"], p["message"], p["count"], p["queues"]) for p in patterns] == [
        ("ValueError", "boom: x", 4, [w.MIXED]),
        ("RuntimeError", "flaky failure 1", 3, [w.MIXED]),
    ]
    assert sorted(patterns[0]["exampleTaskIds"]) == sorted(t.id for t in workload.dead)
    assert sorted(patterns[1]["exampleTaskIds"]) == sorted(t.id for t in workload.flaky)

    health = (await _query(gql, HEALTH))["systemHealth"]
    assert health["status"] == "CRITICAL"
    alerts = {(a["metric"], a["queue"]): a for a in health["alerts"]}
    assert set(alerts) == {
        ("BACKLOG", w.HELD),
        ("OLDEST_WAIT_SECONDS", w.HELD),
        ("ERROR_RATE", w.MIXED),
        ("P95_PROCESSING_SECONDS", w.OK),
        ("P95_PROCESSING_SECONDS", w.MIXED),
    }
    backlog = alerts["BACKLOG", w.HELD]
    assert (backlog["severity"], backlog["value"], backlog["threshold"]) == ("CRITICAL", 3, 1)
    assert backlog["replica"] is None
    assert _time(backlog["time"]) == _time(health["checkedAt"])
    rate = alerts["ERROR_RATE", w.MIXED]
    assert (rate["value"], rate["threshold"]) == (0.7, 0.2)
    slow = alerts["P95_PROCESSING_SECONDS", w.OK]
    assert slow["value"] == pytest.approx(workload.ok_tally().percentile(0.95), abs=1e-9)


async def test_bad_ranges_are_invalid_argument(gql: GraphQL) -> None:
    body = await gql(
        "query($s: DateTime!, $u: DateTime!) { trends(since: $s, until: $u) { since } }",
        s="2025-01-02T00:00:00+00:00",
        u="2025-01-01T00:00:00+00:00",
    )
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
    assert "before until" in body["errors"][0]["message"]

    body = await gql('{ errorPatterns(since: "2025-01-01T00:00:00") { count } }')
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
    assert "time zone" in body["errors"][0]["message"]

    body = await gql("{ errorPatterns(limit: 0) { count } }")
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
