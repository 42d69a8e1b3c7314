"""One client, several replicas: calls go round all of them, and on without
the one that stops (gRPC's round_robin over the address list)."""

from __future__ import annotations

import re

import pytest
from support import running_replica

from treadle.client import Client, TaskState
from treadle.common import config
from treadle.common.errors import InvalidArgument
from treadle.common.target import target
from treadle.gateway.settings import Settings as GatewaySettings


async def test_calls_go_round_the_replicas_and_skip_a_stopped_one(
    database_url: str, schema: str
) -> None:
    async with (
        running_replica(database_url, schema) as first,
        running_replica(database_url, schema) as second,
    ):
        address = f"{first.address},{second.address}"
        async with Client(address, timeout=5) as client:
            answered = {(await client.health()).replica_id for _ in range(8)}
            assert answered == {first.settings.replica_id, second.settings.replica_id}

            await second.stop()
            for n in range(10):
                task = await client.submit("echo", {"n": n})
                assert (await client.get(task.id)).id == task.id
                assert (await client.health()).replica_id == first.settings.replica_id
            done = await client.wait(task.id, timeout=10)
            assert done.state is TaskState.SUCCEEDED and done.result == {"n": 9}


def test_a_list_takes_ip_addresses_and_says_why() -> None:
    assert target(" 10.0.0.1:50051 ") == "10.0.0.1:50051"
    assert target("scheduler:50051") == "scheduler:50051"
    assert target("10.0.0.1:1, 10.0.0.2:2") == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert target("[::1]:1,[fe80::2]:2") == "ipv6:[::1]:1,[fe80::2]:2"
    for bad, says in (
        ("scheduler-1:50051,scheduler-2:50051", "one DNS name that resolves to every replica"),
        ("10.0.0.1,10.0.0.2:2", "'10.0.0.1' is not ip:port"),
        ("10.0.0.1:70000,10.0.0.2:2", "'10.0.0.1:70000' is not ip:port"),
        ("::1:5,::2:6", "'::1:5' is not ip:port ([ipv6]:port)"),
        ("10.0.0.1:1,[::1]:2", "mixes IPv4 and IPv6"),
    ):
        with pytest.raises(InvalidArgument, match=re.escape(says)):
            target(bad)


def test_the_gateway_refuses_a_bad_list_naming_the_variable() -> None:
    given = "10.0.0.1:50051,scheduler-2:50051"
    says = f"TREADLE_SCHEDULER_ADDRESS {given!r}: 'scheduler-2:50051' is not ip:port"
    with pytest.raises(InvalidArgument, match=re.escape(says)):
        config.load(GatewaySettings, {"TREADLE_SCHEDULER_ADDRESS": given})
