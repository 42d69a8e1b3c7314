"""The `treadle` command line, run as a real subprocess."""

from __future__ import annotations

import json

from support import treadle

from treadle.scheduler.supervisor import Replica


async def test_submit_wait_and_get(replica: Replica) -> None:
    code, out, err = await treadle(
        "submit", "echo", "--payload", '{"via": "cli"}', "--wait", "--address", replica.address
    )
    assert code == 0, err
    task = json.loads(out)
    assert task["state"] == "SUCCEEDED"
    assert task["result"] == {"via": "cli"}
    code, out, err = await treadle(
        "get", task["id"], env={"TREADLE_SCHEDULER_ADDRESS": replica.address}
    )
    assert code == 0, err
    assert json.loads(out)["id"] == task["id"]


async def test_submit_says_when_the_idempotency_key_matched(replica: Replica) -> None:
    args = ["submit", "echo", "--idempotency-key", "cli-once", "--address", replica.address]
    code, out, err = await treadle(*args, "--payload", "1")
    assert code == 0, err
    assert "matched" not in err
    first = json.loads(out)
    code, out, err = await treadle(*args, "--payload", "2")
    assert code == 0, err
    again = json.loads(out)
    assert again["id"] == first["id"] and again["payload"] == 1
    assert f"idempotency key 'cli-once' matched task {first['id']}" in err


async def test_submit_with_a_concurrency_key(replica: Replica) -> None:
    args = ["submit", "echo", "--concurrency-key", "user:1", "--address", replica.address]
    code, out, err = await treadle(*args, "--max-concurrent", "2", "--wait")
    assert code == 0, err
    task = json.loads(out)
    assert (task["concurrency_key"], task["max_concurrent"], task["state"]) == (
        "user:1",
        2,
        "SUCCEEDED",
    )
    code, _, err = await treadle(*args)
    assert code == 1 and "concurrency_key needs max_concurrent" in err


async def test_failed_task_exits_nonzero_with_wait(replica: Replica) -> None:
    code, out, _ = await treadle("submit", "boom", "--wait", "--address", replica.address)
    assert code == 1
    assert json.loads(out)["state"] == "DEAD"


async def test_bad_input_is_a_clear_error(replica: Replica) -> None:
    code, _, err = await treadle(
        "submit", "echo", "--payload", "{nope", "--address", replica.address
    )
    assert code == 1
    assert "INVALID_ARGUMENT" in err and "--payload is not valid JSON" in err
    code, _, err = await treadle("submit", "missing", "--address", replica.address)
    assert code == 1
    assert "no handler is registered for task 'missing'" in err
    assert "Traceback" not in err


async def test_unknown_or_malformed_setting_names_the_variable() -> None:
    code, _, err = await treadle("get", "x", env={"TREADLE_GRPC_PROT": "1"})
    assert code == 1 and "TREADLE_GRPC_PROT" in err
    code, _, err = await treadle("migrate", env={"TREADLE_DATABASE_POOL_SIZE": "many"})
    assert code == 1 and "TREADLE_DATABASE_POOL_SIZE='many' is not a valid int" in err


async def test_help_lists_every_command() -> None:
    code, out, _ = await treadle("--help")
    assert code == 0
    for command in ("up", "scheduler", "gateway", "migrate", "submit", "get", "schedule", "bench"):
        assert command in out
    code, _, err = await treadle("frobnicate")
    assert code == 2 and "invalid choice" in err


async def test_migrate_creates_the_schema(database_url: str, schema: str) -> None:
    env = {"TREADLE_DATABASE_URL": database_url, "TREADLE_DATABASE_SCHEMA": schema}
    code, out, err = await treadle("migrate", "--check", env=env)
    assert code == 1, out
    assert "database schema is at version None" in err and "run `treadle migrate`" in err
    code, out, err = await treadle("migrate", env=env)
    assert code == 0, err
    assert "applied migrations 0001, 0002" in out
    assert f"to schema {schema}" in out
    code, out, _ = await treadle("migrate", env=env)
    assert code == 0 and "up to date" in out
    code, out, _ = await treadle("migrate", "--check", env=env)
    assert code == 0 and "up to date" in out


async def test_bench_reports_figures(replica: Replica) -> None:
    code, out, err = await treadle(
        "bench", "-n", "300", "--batch", "100", "--json", "--address", replica.address
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["states"] == {"SUCCEEDED": 300}
    assert report["submit_rate"] > 0 and report["drain_rate"] > 0
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert "lateness_ms" not in report


async def test_bench_with_a_delay_reports_lateness(replica: Replica) -> None:
    code, out, err = await treadle(
        "bench", "-n", "50", "--batch", "25", "--delay", "0.5", "--address", replica.address
    )
    assert code == 0, err
    assert "final states   {'SUCCEEDED': 50}" in out
    assert "lateness       p50 " in out and "(start - run time, delay 0.5 s)" in out
    code, _, err = await treadle("bench", "--delay", "-1", "--address", replica.address)
    assert code == 1 and "delay_seconds must not be negative" in err  # the scheduler's check


async def test_schedule_create_list_pause_delete(replica: Replica) -> None:
    address = ["--address", replica.address]
    code, out, err = await treadle(
        "schedule", "create", "nightly", "--cron", "0 3 * * *", "--timezone", "Europe/Paris",
        "--task", "square", "--payload", '{"x": 2}', "--priority", "4", *address,
    )  # fmt: skip
    assert code == 0, err
    created = json.loads(out)
    assert created["name"] == "nightly" and created["timezone"] == "Europe/Paris"
    assert created["task"] == {
        "name": "square",
        "payload": {"x": 2},
        "queue": "math",
        "priority": 4,
        "max_attempts": None,
        "timeout_seconds": None,
        "retry": None,
    }
    assert created["next_fire_at"] and not created["paused"]

    code, out, err = await treadle("schedule", "list", *address)
    assert code == 0, err
    assert json.loads(out) == [created]
    code, out, err = await treadle("schedule", "pause", "nightly", *address)
    assert code == 0 and json.loads(out)["paused"] is True, err
    code, out, err = await treadle("schedule", "delete", "nightly", *address)
    assert code == 0 and "deleted schedule nightly" in out, err
    assert replica.parts.schedules is not None and await replica.parts.schedules.list() == []


async def test_schedule_errors_are_clear(replica: Replica) -> None:
    address = ["--address", replica.address]
    code, _, err = await treadle(
        "schedule", "create", "x", "--cron", "99 * * * *", "--task", "echo", *address
    )
    assert code == 1
    assert "INVALID_ARGUMENT" in err and "invalid cron expression '99 * * * *'" in err
    assert "Traceback" not in err
    code, _, err = await treadle("schedule", "delete", "absent", *address)
    assert code == 1 and "NOT_FOUND: schedule 'absent' not found" in err
    code, _, err = await treadle("schedule", "create", "x", "--task", "echo", *address)
    assert code == 2 and "--cron" in err


async def test_cancel_retry_and_queue_commands(replica: Replica) -> None:
    address = ["--address", replica.address]
    code, out, err = await treadle("submit", "echo", "--delay", "3600", *address)
    assert code == 0, err
    task = json.loads(out)
    assert task["state"] == "SCHEDULED"
    code, out, err = await treadle("cancel", task["id"], *address)
    assert code == 0, err
    assert json.loads(out)["state"] == "CANCELLED"
    code, out, err = await treadle("retry", task["id"], *address)
    assert code == 0, err
    assert json.loads(out)["state"] == "QUEUED"

    code, out, err = await treadle(
        "queue", "update", "math", "--max-concurrent", "4", "--backoff-base", "0.5", *address
    )
    assert code == 0, err
    queue = json.loads(out)
    assert queue["max_concurrent"] == 4
    assert queue["retry"] == {"base_seconds": 0.5, "factor": 2.0, "max_seconds": 300.0}
    code, out, _ = await treadle("queue", "pause", "math", *address)
    assert json.loads(out)["paused"] is True
    code, out, _ = await treadle("queue", "list", *address)
    assert {q["name"] for q in json.loads(out)} >= {"default", "math"}
    code, _, err = await treadle("queue", "show", "nope", *address)
    assert code == 1
    assert "NOT_FOUND" in err
