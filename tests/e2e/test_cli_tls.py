"""The `treadle` command line over TLS, run as real subprocesses: client commands
against a replica serving TLS, `treadle up` with mutual TLS between its parts
and HTTPS, and TLS settings that stop a command at start naming the setting."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import sys
from typing import Any

import httpx
import pytest
from support import treadle, until
from tls_files import Pki

from treadle.scheduler.supervisor import Replica


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def graphql(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    reply = await http.post("/graphql", json={"query": query, "variables": variables})
    body: dict[str, Any] = reply.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


async def test_submit_and_get_with_tls_ca(tls_replica: Replica, pki: Pki) -> None:
    code, out, err = await treadle(
        "submit", "echo", "--payload", '{"cli": "tls"}', "--wait",
        "--address", tls_replica.address, "--tls-ca", str(pki.ca),
    )  # fmt: skip
    assert code == 0, err
    task = json.loads(out)
    assert (task["state"], task["result"]) == ("SUCCEEDED", {"cli": "tls"})
    # The variables do as well as the flags.
    env = {"TREADLE_SCHEDULER_ADDRESS": tls_replica.address, "TREADLE_TLS_CA": str(pki.ca)}
    code, out, err = await treadle("get", task["id"], env=env)
    assert code == 0, err
    assert json.loads(out)["id"] == task["id"]
    code, out, err = await treadle("queue", "list", env=env)
    assert code == 0, err


async def test_without_tls_ca_the_command_fails_clearly(tls_replica: Replica) -> None:
    code, _, err = await treadle("get", "x", "--address", tls_replica.address)
    assert code == 1
    assert "UNAVAILABLE" in err and "Traceback" not in err


async def test_mutual_tls_from_the_command_line(mtls_replica: Replica, pki: Pki) -> None:
    base = ["queue", "list", "--address", mtls_replica.address, "--tls-ca", str(pki.ca)]
    code, _, err = await treadle(*base)
    assert code == 1 and "UNAVAILABLE" in err, "no client certificate: refused"
    code, out, err = await treadle(
        *base, "--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key)
    )
    assert code == 0, err
    assert isinstance(json.loads(out), list)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scheduler", "--app", "taskapp", "--tls-cert", "{server_cert}"],
         "TREADLE_TLS_CERT is set but TREADLE_TLS_KEY is not: they go together"),
        (["scheduler", "--app", "taskapp", "--tls-cert", "{missing}", "--tls-key", "{server_key}"],
         "TREADLE_TLS_CERT: cannot read {missing}: No such file or directory"),
        (["scheduler", "--app", "taskapp", "--tls-cert", "{server_cert}",
          "--tls-key", "{client_key}"],
         "TREADLE_TLS_KEY ({client_key}) is not the private key of TREADLE_TLS_CERT"),
        (["gateway", "--tls-cert", "{client_cert}", "--tls-key", "{client_key}"],
         "TREADLE_TLS_CERT needs TREADLE_TLS_CA"),
        (["gateway", "--http-tls-cert", "{server_cert}", "--http-tls-key", "{ca}"],
         "TREADLE_HTTP_TLS_KEY: {ca} holds no PEM private key"),
        (["up", "--tls-ca", "{ca}"], "the scheduler has no certificate to serve"),
        (["up", "--tls-cert", "{server_cert}", "--tls-key", "{server_key}"],
         "TREADLE_TLS_CERT needs TREADLE_TLS_CA"),
        (["get", "x", "--tls-ca", "{server_key}"], "TREADLE_TLS_CA: {server_key} holds no PEM"),
    ],
)  # fmt: skip
async def test_bad_tls_settings_stop_the_command_naming_the_setting(
    pki: Pki, args: list[str], message: str
) -> None:
    files = {
        "server_cert": pki.server.cert,
        "server_key": pki.server.key,
        "client_cert": pki.client.cert,
        "client_key": pki.client.key,
        "ca": pki.ca,
        "missing": pki.ca.parent / "missing.pem",
    }
    names = {k: str(v) for k, v in files.items()}
    env = {"TREADLE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}  # never reached
    code, out, err = await treadle(*(a.format(**names) for a in args), env=env)
    assert code == 1, out
    assert err.startswith("treadle: error: INVALID_ARGUMENT: "), err
    assert message.format(**names) in err
    assert "Traceback" not in err


async def test_up_with_mutual_tls_inside_and_https_outside(
    database_url: str, schema: str, pki: Pki
) -> None:
    """`treadle up` serves gRPC with the certificate, requires client certificates,
    and its gateway calls the scheduler presenting the same certificate."""
    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env |= {
        "TREADLE_DATABASE_URL": database_url,
        "TREADLE_DATABASE_SCHEMA": schema,
        "TREADLE_TLS_CERT": str(pki.server.cert),
        "TREADLE_TLS_KEY": str(pki.server.key),
        "TREADLE_TLS_CA": str(pki.ca),
        "TREADLE_TLS_CLIENT_CA": str(pki.ca),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "treadle.cli", "up",
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", "0",
        "--http-tls-cert", str(pki.server.cert), "--http-tls-key", str(pki.server.key),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    output: list[str] = []
    try:
        while not any("auth " in line for line in output):  # the banner's last line
            line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
            assert line, "treadle up exited early:\n" + "".join(output)
            output.append(line)
        banner = "".join(output)
        assert f"https://127.0.0.1:{http_port}/graphql" in banner
        assert f"127.0.0.1:{grpc_port} (TLS, client certificates required)" in banner
        trust = ssl.create_default_context(cafile=str(pki.ca))
        base = f"https://127.0.0.1:{http_port}"
        async with httpx.AsyncClient(base_url=base, verify=trust, timeout=10) as http:
            submitted = await graphql(
                http,
                'mutation($p: JSON!) { submitTask(input: {name: "echo", payload: $p}) { id } }',
                p={"up": "tls"},
            )
            task_id = submitted["submitTask"]["id"]

            async def succeeded() -> dict[str, Any] | None:
                data = await graphql(
                    http, "query($id: ID!) { task(id: $id) { state result } }", id=task_id
                )
                return data["task"] if data["task"]["state"] == "SUCCEEDED" else None

            assert (await until(succeeded))["result"] == {"up": "tls"}
        proc.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(proc.stdout.read(), timeout=20)).decode()
        assert await proc.wait() == 0, rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
