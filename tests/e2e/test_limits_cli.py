"""`treadle tenants limits` (on the database) and `treadle queue update
--start-limit`, run as real subprocesses."""

from __future__ import annotations

import json

from test_cli import treadle

from treadle.scheduler.supervisor import Replica


async def test_tenant_limits_set_list_and_clear(database_url: str, schema: str, db: object) -> None:
    env = {"TREADLE_DATABASE_URL": database_url, "TREADLE_DATABASE_SCHEMA": schema}
    code, out, err = await treadle("tenants", "limits", "list", env=env)
    assert code == 0, err
    assert "no tenant has limits of its own" in out

    code, out, err = await treadle(
        "tenants", "limits", "set", "acme", "--submit-rate", "100", "--burst", "200",
        "--max-queued", "100000", "--json", env=env,
    )  # fmt: skip
    assert code == 0, err
    row = json.loads(out)
    assert (row["tenant"], row["submit_rate"], row["submit_burst"]) == ("acme", 100.0, 200)
    assert (row["max_queued"], row["key_submit_rate"]) == (100000, None)

    code, out, err = await treadle(
        "tenants", "limits", "set", "acme", "--burst", "default", "--key-submit-rate", "5",
        env=env,
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == (
        "acme: submit-rate=100 burst=default key-submit-rate=5 key-burst=default max-queued=100000"
    )
    code, out, _ = await treadle("tenants", "limits", "list", "--json", env=env)
    assert [(t["tenant"], t["submit_burst"]) for t in json.loads(out)] == [("acme", None)]

    for bad, says in (
        (["--submit-rate", "-1"], "must be a finite number, 0 or more"),
        (["--burst", "1.5"], "must be a whole number"),
        ([], "say which limits to set"),
    ):
        code, _, err = await treadle("tenants", "limits", "set", "acme", *bad, env=env)
        assert code != 0 and says in err, err
    code, _, err = await treadle("tenants", "limits", "set", "acme", "--burst", "x", env=env)
    assert code == 2 and "not a number or 'default'" in err

    code, out, err = await treadle("tenants", "limits", "clear", "acme", env=env)
    assert code == 0 and "acme: every limit is the default" in out, err
    code, out, _ = await treadle("tenants", "limits", "list", "--json", env=env)
    assert json.loads(out) == []


async def test_tenant_limits_need_a_migrated_schema(database_url: str, schema: str) -> None:
    env = {"TREADLE_DATABASE_URL": database_url, "TREADLE_DATABASE_SCHEMA": schema}
    code, _, err = await treadle("tenants", "limits", "list", env=env)
    assert code == 1 and "run `treadle migrate`" in err


async def test_queue_update_sets_a_start_limit(replica: Replica) -> None:
    address = ["--address", replica.address]
    code, out, err = await treadle(
        "queue", "update", "math", "--start-limit", "30", "--start-window", "60",
        "--start-limit-key", "customer", *address,
    )  # fmt: skip
    assert code == 0, err
    queue = json.loads(out)
    assert (queue["start_limit"], queue["start_window_seconds"]) == (30, 60.0)
    assert queue["start_limit_key"] == "customer"
    code, out, err = await treadle("queue", "update", "math", "--start-limit", "0", *address)
    assert code == 0, err
    assert json.loads(out)["start_limit"] is None
