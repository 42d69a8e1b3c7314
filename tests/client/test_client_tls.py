"""The client over TLS, against a real replica serving TLS on loopback: what it
must trust, and mutual TLS (the scheduler requires a client certificate)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme
from support import running_replica
from tls_files import Pki, issue

from treadle.client import Client, SyncClient, TaskState, TLSConfig, Unavailable
from treadle.scheduler.supervisor import Replica


async def _submit_and_read(address: str, tls: TLSConfig | None) -> None:
    async with Client(address, tls=tls, timeout=5) as client:
        task = await client.submit("echo", {"over": "tls"})
        done = await client.wait(task.id, timeout=10)
        assert (done.state, done.result) == (TaskState.SUCCEEDED, {"over": "tls"})
        assert (await client.get(task.id)).id == task.id


async def _refused(address: str, tls: TLSConfig | None) -> None:
    async with Client(address, tls=tls, timeout=5) as client:
        with pytest.raises(Unavailable):
            await client.submit("echo", 1)


async def test_a_client_trusting_the_ca_submits_and_reads(tls_replica: Replica, pki: Pki) -> None:
    assert tls_replica.address.startswith("127.0.0.1:")
    await _submit_and_read(tls_replica.address, TLSConfig(ca=pki.ca))
    # The CA's bytes do as well as its path.
    await _submit_and_read(tls_replica.address, TLSConfig(ca=pki.ca.read_bytes()))


async def test_the_sync_client_takes_tls_too(tls_replica: Replica, pki: Pki) -> None:
    def use() -> TaskState:
        with SyncClient(tls_replica.address, tls=TLSConfig(ca=str(pki.ca))) as client:
            return client.wait(client.submit("echo", 1).id, timeout=10).state

    assert await asyncio.to_thread(use) == TaskState.SUCCEEDED


async def test_a_plaintext_client_cannot_call_a_tls_scheduler(tls_replica: Replica) -> None:
    await _refused(tls_replica.address, None)


async def test_a_client_trusting_another_ca_refuses_the_scheduler(
    tls_replica: Replica, pki: Pki
) -> None:
    await _refused(tls_replica.address, TLSConfig(ca=pki.other_ca))
    await _refused(tls_replica.address, TLSConfig())  # the public roots do not know it either


async def test_the_name_checked_can_differ_from_the_host_dialed(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    """A certificate for `scheduler.internal` only, reached at 127.0.0.1."""
    ca = trustme.CA()
    trust = tmp_path / "internal-ca.pem"
    ca.cert_pem.write_to_path(str(trust))
    named = issue(ca, tmp_path, "internal", "scheduler.internal")
    async with running_replica(
        database_url, schema, tls_cert=str(named.cert), tls_key=str(named.key)
    ) as replica:
        await _refused(replica.address, TLSConfig(ca=trust))  # 127.0.0.1 is not in it
        await _submit_and_read(
            replica.address, TLSConfig(ca=trust, server_name="scheduler.internal")
        )


async def test_mutual_tls_a_client_without_a_certificate_is_refused(
    mtls_replica: Replica, pki: Pki
) -> None:
    await _refused(mtls_replica.address, TLSConfig(ca=pki.ca))


async def test_mutual_tls_a_certificate_signed_by_the_client_ca_is_accepted(
    mtls_replica: Replica, pki: Pki
) -> None:
    tls = TLSConfig(ca=pki.ca, cert=pki.client.cert, key=pki.client.key)
    await _submit_and_read(mtls_replica.address, tls)


async def test_mutual_tls_a_certificate_from_another_ca_is_refused(
    mtls_replica: Replica, pki: Pki
) -> None:
    stranger = pki.stranger
    await _refused(mtls_replica.address, TLSConfig(ca=pki.ca, cert=stranger.cert, key=stranger.key))
