"""`python -m treadle.gateway` as a real process: settings from the environment, signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import httpx

from .helpers import closed_port

GATEWAY = [sys.executable, "-m", "treadle.gateway"]


def environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    return {**env, **settings}


async def test_serves_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        *GATEWAY,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(
            TREADLE_HTTP_PORT="0", TREADLE_SCHEDULER_ADDRESS=f"127.0.0.1:{closed_port()}"
        ),
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        url = None
        while url is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), timeout=10)).decode()
            assert line, "the gateway exited before it listened"
            if match := re.search(r"gateway on (http://\S+)/graphql", line):
                url = match.group(1)
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).json() == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.stderr.read(), timeout=10)).decode()
        assert await proc.wait() == 0
        assert "gateway stopped" in rest
        assert "Traceback" not in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_malformed_setting_names_the_variable() -> None:
    proc = await asyncio.create_subprocess_exec(
        *GATEWAY,
        stderr=asyncio.subprocess.PIPE,
        env=environment(TREADLE_HTTP_PORT="99999"),
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 1
    assert "TREADLE_HTTP_PORT out of range" in err.decode()
    assert "Traceback" not in err.decode()
