"""`treadle keys`, `treadle audit`, --api-key and the secure defaults, run as
real subprocesses against the test database and real replicas."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal

import pytest
from auth_support import authed_replica
from support import TREADLE, treadle


@pytest.fixture
def db_env(database_url: str, schema: str) -> dict[str, str]:
    return {"TREADLE_DATABASE_URL": database_url, "TREADLE_DATABASE_SCHEMA": schema}


async def test_keys_from_creation_to_revocation(
    db_env: dict[str, str], database_url: str, schema: str
) -> None:
    # The first key, on a database no replica has touched: the schema is made.
    code, out, err = await treadle(
        "keys", "create", "--tenant", "acme", "--scope", "submit,read", "--name", "ci-deploy",
        "--expires", "90d", env=db_env,
    )  # fmt: skip
    assert code == 0, err
    token = re.search(r"^  (trdl_[0-9a-f]{16}_[0-9a-f]{64})$", out, re.MULTILINE)
    assert token is not None, out
    assert "in tenant acme: scopes submit, read; expires 20" in out
    code, out, err = await treadle(
        "keys", "create", "--tenant", "acme", "--scope", "admin", "--json", env=db_env
    )
    assert code == 0, err
    admin = json.loads(out)
    assert admin["key"]["scopes"] == ["admin"] and admin["key"]["status"] == "active"

    code, out, err = await treadle("keys", "list", "--json", env=db_env)
    assert code == 0, err
    listed = json.loads(out)
    assert [(k["tenant"], k["name"], k["status"]) for k in listed] == [
        ("acme", "ci-deploy", "active"),
        ("acme", "unnamed", "active"),
    ]
    assert all("token" not in k and "secret_hash" not in k for k in listed)
    first = listed[0]["prefix"]
    code, out, err = await treadle("keys", "list", env=db_env)
    assert code == 0, err
    assert out.splitlines()[0].split() == [
        "KEY", "TENANT", "NAME", "SCOPES", "STATUS", "CREATED", "EXPIRES", "LAST", "USED",
    ]  # fmt: skip
    assert first in out

    # Calls with the keys, through a replica that requires them.
    async with authed_replica(database_url, schema) as replica:
        address = ["--address", replica.address]
        code, out, err = await treadle(
            "submit", "echo", "--payload", '{"k": 1}', "--wait", *address, "--api-key", token[1]
        )
        assert code == 0, err
        task = json.loads(out)
        code, out, err = await treadle("get", task["id"], *address)
        assert code == 1 and "UNAUTHENTICATED: no API key" in err
        code, out, err = await treadle(
            "queue", "pause", "default", *address, env={"TREADLE_API_KEY": token[1]}
        )
        assert code == 1 and "PERMISSION_DENIED" in err and "needs the admin scope" in err
        code, out, err = await treadle(
            "queue", "pause", "default", *address, env={"TREADLE_API_KEY": admin["token"]}
        )
        assert code == 0, err

    code, out, err = await treadle(
        "keys", "rotate", first, "--tenant", "acme", "--grace", "1h", "--json", env=db_env
    )
    assert code == 0, err
    rotated = json.loads(out)
    assert rotated["key"]["rotated_from"] == first.removeprefix("trdl_")
    assert rotated["old_key"]["status"] == "active" and rotated["old_key"]["expires_at"]
    code, out, err = await treadle("keys", "revoke", first, "--tenant", "acme", env=db_env)
    assert code == 0, err
    assert f"Revoked API key {first} (ci-deploy) of tenant acme." in out
    code, out, err = await treadle("keys", "revoke", first, "--tenant", "other", env=db_env)
    assert code == 1 and f"NOT_FOUND: no API key {first} in tenant 'other'" in err

    code, out, err = await treadle("audit", "--json", env=db_env)
    assert code == 0, err
    events = json.loads(out)
    assert [(e["action"], e["tenant"]) for e in events] == [
        ("RevokeKey", "acme"),
        ("RotateKey", "acme"),
        ("PauseQueue", "acme"),
        ("CreateKey", "acme"),
        ("CreateKey", "acme"),
    ]
    assert events[2]["key_name"] == "unnamed" and events[0]["key_name"].startswith("cli:")
    code, out, err = await treadle("audit", "--tenant", "other", env=db_env)
    assert code == 0 and out.strip() == "no audit events"
    code, out, err = await treadle("audit", "--limit", "2", env=db_env)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "AT", "TENANT", "BY", "ACTION", "TARGET", "CHANGE"]
    assert len(lines) == 3 and "RevokeKey" in lines[1]


async def test_bad_key_commands_are_clear_errors(db_env: dict[str, str]) -> None:
    code, _, err = await treadle("keys", "create", "--scope", "write", env=db_env)
    assert code == 1 and "scopes must be one or more of submit, read, admin" in err
    code, _, err = await treadle(
        "keys", "create", "--scope", "read", "--expires", "soon", env=db_env
    )
    assert code == 1 and "--expires 'soon' is not a duration" in err
    code, _, err = await treadle("audit", "--limit", "0", env=db_env)
    assert code == 1 and "--limit must be 1 .. 1000, got 0" in err
    code, out, _ = await treadle("keys", "--help")
    assert code == 0 and "treadle keys create --tenant acme --scope submit,read" in out


@pytest.mark.parametrize(
    "args",
    [
        ["scheduler", "--grpc-host", "0.0.0.0"],
        ["gateway", "--http-host", "0.0.0.0"],
        ["up", "--grpc-host", "10.1.2.3"],
        ["up", "--http-host", "0.0.0.0"],
        ["scheduler", "--metrics-host", "0.0.0.0"],
        ["up", "--metrics-host", "10.1.2.3"],
    ],
)
async def test_no_auth_beyond_loopback_refuses_to_start(args: list[str]) -> None:
    env = {k: "" for k in os.environ if k.startswith("TREADLE_")}
    code, _, err = await treadle(*args, env={**env, "TREADLE_APP": "taskapp"})
    assert code == 1
    assert "refusing to listen on" in err and "without authentication" in err
    assert "--insecure-no-auth" in err


@pytest.mark.parametrize(
    ("flags", "banner"),
    [
        (["--insecure-no-auth"], "auth       OFF"),
        (["--auth", "keys"], "auth       API keys required (TREADLE_AUTH=keys)"),
    ],
)
async def test_beyond_loopback_starts_with_keys_or_the_flag(
    db_env: dict[str, str], flags: list[str], banner: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *TREADLE,
        "scheduler",
        "--app",
        "treadle.scheduler.example",
        "--grpc-host",
        "0.0.0.0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **db_env},
    )
    assert proc.stdout is not None
    try:
        seen = ""
        async with asyncio.timeout(30):
            while banner not in seen:
                line = await proc.stdout.readline()
                assert line, f"the scheduler exited: {seen}"
                seen += line.decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0
