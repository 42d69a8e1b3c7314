"""An HTTP load generator for benchmarks of a gateway on this machine.

    result = run_load("http://127.0.0.1:8000/health", connections=64, seconds=10)
    print(result.line())

The load comes from processes other than the caller's, so measuring does not
take CPU from a server running in the caller (a test's gateway): `wrk` when it
is on PATH (a Lua script, written to a temporary file, sets the method, body
and headers, checks each response and reports counts and latency percentiles
from its `done` callback), else `WORKERS` Python processes, each keeping its
share of the connections busy over HTTP/1.1 keep-alive (raw asyncio streams).

An error is a request that failed (refused or lost connection, time-out), a
response whose status is not 2xx, or a JSON object body with a top-level
`errors` key (a GraphQL error). Only loopback URLs are accepted, and a run
ends after `seconds` (plus start-up); `python -m treadle.cli.httpload --help`
runs it from a shell.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Seconds the Python workers get to start (import, connect) before the load begins.
STARTUP_SECONDS = 1.0
#: Seconds a run may overrun `seconds` + start-up before it is stopped.
GRACE_SECONDS = 15.0
#: Seconds one request may take; a slower one is an error (wrk: a time-out).
REQUEST_TIMEOUT = 5.0
#: Marks the result line among wrk's output.
_MARK = "TREADLE-LOAD "


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """What one run measured. Latencies are in milliseconds, over the requests
    that completed (0.0 when none did); `rate` counts completed requests,
    errors included, per second of the run."""

    tool: str
    connections: int
    seconds: float
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line for a report."""
        return (
            f"{self.rate:,.0f} req/s ({self.requests} requests, {self.errors} errors, "
            f"{self.seconds:.1f} s, {self.connections} connections, {self.tool}); latency ms "
            f"p50 {self.p50_ms:.2f} p90 {self.p90_ms:.2f} p99 {self.p99_ms:.2f} "
            f"max {self.max_ms:.2f}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rate": self.rate}


@dataclasses.dataclass(frozen=True)
class _Target:
    host: str
    port: int
    target: str
    url: str


def _target(url: str) -> _Target:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// URL: {url!r}")
    host = parts.hostname
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not loopback:
        raise ValueError(f"load is only sent to this machine (127.0.0.1, localhost), not {host!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return _Target(host, parts.port or 80, target, url)


def _headers(body: bytes | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    """`headers`, with a JSON content type when there is a body and they name none."""
    given = dict(headers or {})
    if body is not None and not any(k.lower() == "content-type" for k in given):
        given["Content-Type"] = "application/json"
    return given


def run_load(
    url: str,
    *,
    connections: int,
    seconds: float,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    tool: str | None = None,
    workers: int | None = None,
) -> LoadResult:
    """Keep `connections` requests in flight against `url` for `seconds`.

    `tool` is "wrk" or "python"; by default wrk when it is on PATH. `workers`
    is the number of processes (wrk: threads) sharing the connections; by
    default as many as this machine has CPUs, at most `connections`.
    """
    target = _target(url)
    if connections < 1:
        raise ValueError("connections must be at least 1")
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    wrk = shutil.which("wrk")
    chosen = tool or ("wrk" if wrk else "python")
    count = max(1, min(connections, workers or os.cpu_count() or 1))
    all_headers = _headers(body, headers)
    if chosen == "wrk":
        if wrk is None:
            raise ValueError("wrk is not on PATH")
        return _run_wrk(wrk, target, connections, seconds, method, body, all_headers, count)
    if chosen == "python":
        return _run_python(target, connections, seconds, method, body, all_headers, count)
    raise ValueError(f"unknown load tool {chosen!r}: wrk or python")


# -- wrk ---------------------------------------------------------------------------


def _lua_string(data: bytes) -> str:
    """`data` as a Lua string literal (every byte but letters and digits escaped)."""
    return '"' + "".join(chr(b) if chr(b).isalnum() else f"\\{b:03d}" for b in data) + '"'


_LUA = """
wrk.method = {method}
{body}
{headers}

local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
end

-- True when the JSON object `body` has a top-level key "errors".
local function graphql_errors(body)
  if string.sub(body, 1, 1) ~= "{{" then return false end
  local depth, pos = 0, 1
  while true do
    local s = string.find(body, '[{{}}%[%]"]', pos)
    if not s then return false end
    local c = string.sub(body, s, s)
    if c == '"' then
      local e = s + 1
      while true do
        local q = string.find(body, '["\\\\]', e)
        if not q then return false end
        if string.sub(body, q, q) == '"' then e = q; break end
        e = q + 2
      end
      if depth == 1 and string.sub(body, s, e) == '"errors"'
          and string.find(body, '^%s*:', e + 1) then
        return true
      end
      pos = e + 1
    else
      if c == "{{" or c == "[" then depth = depth + 1 else depth = depth - 1 end
      pos = s + 1
    end
  end
end

function response(status, headers, body)
  if status < 200 or status > 299 or graphql_errors(body) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    "{mark}%d %d %d %d %d %d %d %.0f %.0f %.0f %.0f\\n",
    summary.duration, summary.requests, total, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_script(method: str, body: bytes | None, headers: Mapping[str, str]) -> str:
    """The Lua script that makes wrk send this request and report what `LoadResult` holds."""
    return _LUA.format(
        method=_lua_string(method.encode()),
        body="" if body is None else f"wrk.body = {_lua_string(body)}",
        headers="\n".join(
            f"wrk.headers[{_lua_string(k.encode())}] = {_lua_string(v.encode())}"
            for k, v in headers.items()
        ),
        mark=_MARK,
    )


def _run_wrk(
    wrk: str,
    target: _Target,
    connections: int,
    seconds: float,
    method: str,
    body: bytes | None,
    headers: Mapping[str, str],
    threads: int,
) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="treadle-load-") as folder:
        script = Path(folder) / "load.lua"
        script.write_text(wrk_script(method, body, headers))
        command = [
            wrk,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={max(1, math.ceil(seconds))}s",  # wrk takes whole seconds
            f"--timeout={REQUEST_TIMEOUT:g}s",
            f"--script={script}",
            target.url,
        ]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=math.ceil(seconds) + GRACE_SECONDS,
            check=False,
        )
    found = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    duration, requests, bad, *failed, p50, p90, p99, peak = (
        float(x) for x in found[-1].removeprefix(_MARK).split()
    )
    return LoadResult(
        tool="wrk",
        connections=connections,
        seconds=duration / 1e6,
        requests=int(requests),
        errors=int(bad + sum(failed)),
        p50_ms=p50 / 1000,
        p90_ms=p90 / 1000,
        p99_ms=p99 / 1000,
        max_ms=peak / 1000,
    )


# -- Python workers ----------------------------------------------------------------


def _run_python(
    target: _Target,
    connections: int,
    seconds: float,
    method: str,
    body: bytes | None,
    headers: Mapping[str, str],
    workers: int,
) -> LoadResult:
    start_at = time.time() + STARTUP_SECONDS
    shares = [connections // workers + (i < connections % workers) for i in range(workers)]
    job = {
        "host": target.host,
        "port": target.port,
        "request": _request(target, method, body, headers).decode("latin-1"),
        "start_at": start_at,
        "seconds": seconds,
    }
    procs: list[subprocess.Popen[bytes]] = []
    reports = []
    try:
        for n in shares:
            # The job (with the request, whatever its size) goes in on standard
            # input, as one line: the worker starts without waiting for the end.
            proc = subprocess.Popen(
                [sys.executable, "-m", "treadle.cli.httpload", "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            procs.append(proc)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(job | {"n": n}).encode() + b"\n")
            proc.stdin.flush()
        for proc in procs:
            remaining = start_at + seconds + GRACE_SECONDS - time.time()
            out, err = proc.communicate(timeout=max(remaining, 1.0))
            if proc.returncode != 0:
                raise RuntimeError(f"a load worker failed ({proc.returncode}): {err.decode()}")
            reports.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    latencies = sorted(us for report in reports for us in report["latencies"])
    return LoadResult(
        tool="python",
        connections=connections,
        seconds=seconds,
        requests=len(latencies),
        errors=sum(report["errors"] for report in reports),
        p50_ms=_percentile(latencies, 50) / 1000,
        p90_ms=_percentile(latencies, 90) / 1000,
        p99_ms=_percentile(latencies, 99) / 1000,
        max_ms=(latencies[-1] if latencies else 0) / 1000,
    )


def _percentile(ordered: Sequence[int], q: float) -> float:
    """The `q`th percentile of sorted values (nearest rank); 0 for none."""
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return float(ordered[int(rank) - 1])


def _request(target: _Target, method: str, body: bytes | None, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {target.target} HTTP/1.1", f"Host: {target.host}:{target.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class _Bad(Exception):
    """A response that cannot be read as HTTP/1.1."""


@dataclasses.dataclass
class _Tally:
    errors: int = 0
    latencies: list[int] = dataclasses.field(default_factory=list)


def _has_errors(body: bytes) -> bool:
    """A JSON object body with a top-level `errors` key (a GraphQL error)."""
    if not body.startswith(b"{") or b'"errors"' not in body:
        return False
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict) and "errors" in value


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    """Send one request and read its response: status, body, whether the server closes."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise _Bad(status_line)
    fields: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        if name:
            fields[name.strip().lower()] = value.strip()
    if "content-length" in fields:
        body = await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # no trailers expected: the blank line
        body = b"".join(chunks)
    else:
        raise _Bad("a response without Content-Length or chunked encoding")
    closes = fields.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0"
    return int(parts[1]), body, closes


async def _connection(job: Mapping[str, Any], start: float, end: float, tally: _Tally) -> None:
    """One connection: a request at a time until `end` (loop time), reconnecting
    when the server closes or the connection fails."""
    loop = asyncio.get_running_loop()
    request = str(job["request"]).encode("latin-1")
    writer: asyncio.StreamWriter | None = None
    try:
        while loop.time() < end:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(job["host"], job["port"])
                except OSError:
                    if loop.time() >= start:
                        tally.errors += 1
                    await asyncio.sleep(0.01)
                    continue
                if loop.time() < start:
                    await asyncio.sleep(start - loop.time())
            began = time.perf_counter()  # uvloop's loop.time() counts whole milliseconds
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status, body, closes = await _exchange(reader, writer, request)
            except (OSError, TimeoutError, _Bad, ValueError, asyncio.IncompleteReadError):
                tally.errors += 1
                closes = True
            else:
                tally.latencies.append(round((time.perf_counter() - began) * 1e6))
                if not 200 <= status <= 299 or _has_errors(body):
                    tally.errors += 1
            if closes:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def _worker(job: Mapping[str, Any]) -> _Tally:
    loop = asyncio.get_running_loop()
    start = loop.time() + max(0.0, float(job["start_at"]) - time.time())
    end = start + float(job["seconds"])
    tally = _Tally()
    # A request in flight at `end` is not counted: the run is over.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(end):
            await asyncio.gather(*(_connection(job, start, end, tally) for _ in range(job["n"])))
    return tally


def _run_worker(job: Mapping[str, Any]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        tally = asyncio.run(_worker(job))
    else:
        tally = uvloop.run(_worker(job))
    json.dump({"errors": tally.errors, "latencies": tally.latencies}, sys.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m treadle.cli.httpload",
        description="Send HTTP load to a server on this machine and report rate and latency.",
    )
    parser.add_argument("url", nargs="?", help="a loopback URL, e.g. http://127.0.0.1:8000/health")
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("-d", "--seconds", type=float, default=10.0)
    parser.add_argument("-X", "--method", default="GET")
    parser.add_argument("--body", help="the request body; @FILE reads it from FILE")
    parser.add_argument("-H", "--header", action="append", default=[], help="NAME: VALUE")
    parser.add_argument("--tool", choices=("wrk", "python"), help="default: wrk if on PATH")
    parser.add_argument("--workers", type=int, help="processes (wrk: threads)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _run_worker(json.loads(sys.stdin.readline()))
        return 0
    if not args.url:
        parser.error("a URL is needed")
    body: bytes | None = None
    if args.body is not None:
        body = Path(args.body[1:]).read_bytes() if args.body.startswith("@") else args.body.encode()
    headers = dict(
        (name.strip(), value.strip()) for name, _, value in (h.partition(":") for h in args.header)
    )
    result = run_load(
        args.url,
        connections=args.connections,
        seconds=args.seconds,
        method=args.method,
        body=body,
        headers=headers,
        tool=args.tool,
        workers=args.workers,
    )
    print(json.dumps(result.as_dict()) if args.json else result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
