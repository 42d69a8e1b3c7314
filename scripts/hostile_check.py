"""Replay issue 9's hostile requests against a running `make up` (GraphQL at
127.0.0.1:8000, gRPC at 127.0.0.1:50051) and print what each got back, how many
tasks they stored (should be 0), whether `echo` still runs, and whether the
reads a dashboard makes still answer. A manual check; the test suite covers
the same cases (tests/fuzz, tests/*/test_hostile_input.py).

    make up &   .venv/bin/python scripts/hostile_check.py
"""

import asyncio
import json
import urllib.error
import urllib.request

import grpc

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pbg
from treadle.client import Client

GQL = "http://127.0.0.1:8000/graphql"


def post(body: bytes, ctype="application/json"):
    req = urllib.request.Request(GQL, data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:200]


def gql(query, variables=None):
    return post(json.dumps({"query": query, "variables": variables or {}}).encode())


async def count(client):
    total = 0
    from treadle.client import TaskState

    for state in TaskState:
        cursor = None
        while True:
            page = await client.list(state=state, page_size=1000, cursor=cursor)
            total += len(page.tasks)
            cursor = page.next_cursor
            if not cursor:
                break
    return total


async def main():
    async with Client("127.0.0.1:50051") as client:
        before = await count(client)
        ch = grpc.aio.insecure_channel("127.0.0.1:50051")
        stub = pbg.SchedulerServiceStub(ch)

        async def rpc(name, call):
            try:
                await call
                print(f"{name}: ACCEPTED (!)")
            except grpc.aio.AioRpcError as e:
                print(f"{name}: {e.code().name} {e.details()[:90]!r}")

        sub = "mutation($i: SubmitTaskInput!){ submitTask(input:$i){ id } }"
        for label, inp in [
            ("gql runAt 9999", {"name": "echo", "runAt": "9999-12-31T23:59:59.999999Z"}),
            ("gql runAt 0001", {"name": "echo", "runAt": "0001-01-01T00:00:00Z"}),
        ]:
            code, body = gql(sub, {"i": inp})
            print(
                label,
                code,
                body["errors"][0]["extensions"]["code"]
                if isinstance(body, dict) and body.get("errors")
                else body,
            )

        def ts(seconds, nanos=0):
            t = pb.TaskSpec(name="echo")
            t.run_at.seconds = seconds
            t.run_at.nanos = nanos
            return t

        await rpc(
            "grpc run_at 9999",
            stub.SubmitTask(pb.SubmitTaskRequest(task=ts(253402300799, 999999000))),
        )
        await rpc("grpc run_at 0001", stub.SubmitTask(pb.SubmitTaskRequest(task=ts(-62135596800))))
        await rpc("grpc nanos -1", stub.SubmitTask(pb.SubmitTaskRequest(task=ts(1800000000, -1))))
        for p in ["NaN", "1e400", '"\\ud800"', "[" * 1000 + "]" * 1000]:
            await rpc(
                f"grpc payload {p[:12]}",
                stub.SubmitTask(pb.SubmitTaskRequest(task=pb.TaskSpec(name="echo", payload=p))),
            )
        await rpc(
            "grpc queue NUL",
            stub.SubmitTask(pb.SubmitTaskRequest(task=pb.TaskSpec(name="echo", queue="a\x00b"))),
        )
        await rpc("grpc ListTasks state=99", stub.ListTasks(pb.ListTasksRequest(state=99)))
        raw = ch.unary_unary("/treadle.api.v1.SchedulerService/GetTask")
        await rpc("grpc GetTask junk bytes", raw(b"\xff\xff\xff"))
        code, body = post(b"\xff\xfe{not utf8")
        print("gql non-UTF-8 body", code, body)
        deep = "[" * 1000 + "]" * 1000
        code, body = post(
            (
                '{"query":"mutation{ submitTask(input:{name:\\"echo\\"}){id} }","variables":{"p":'
                + deep
                + "}}"
            ).encode()
        )
        print(
            "gql body nested 1000",
            code,
            body if not isinstance(body, dict) else body.get("errors", body)[:1],
        )
        after = await count(client)
        print("tasks stored by the hostile requests:", after - before)
        t = await client.submit("echo", {"ok": 1})
        done = await client.wait(t.id, timeout=10)
        print("echo afterwards:", done.state.value, done.result)
        for q in [
            "{ tasks(state: DEAD){ edges { node { id } } } }",
            "{ systemHealth { status } }",
            "{ queueStatsList { queue } }",
        ]:
            code, body = gql(q)
            print(q[:28], code, "errors" in body if isinstance(body, dict) else body)
        await ch.close()


asyncio.run(main())
