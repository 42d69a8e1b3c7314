"""The gateway over HTTPS, calling a scheduler that requires client certificates
(mutual TLS on the gateway's gRPC link). Real replica, real gateway, real TLS."""

from __future__ import annotations

import ssl

import httpx
import pytest
from tls_files import Pki

from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings
from treadle.scheduler.supervisor import Replica

from .helpers import graphql_over, poll


async def _https_gateway(replica: Replica, pki: Pki, **link: str) -> Gateway:
    gateway = Gateway(
        Settings(
            http_port=0,
            http_tls_cert=str(pki.server.cert),
            http_tls_key=str(pki.server.key),
            scheduler_address=replica.address,
            tls_ca=str(pki.ca),
            rpc_timeout=5.0,
            health_timeout=2.0,
            **link,
        )
    )
    await gateway.start()
    return gateway


def _trusting(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


async def test_graphql_over_https_with_mutual_tls_to_the_scheduler(
    mtls_replica: Replica, pki: Pki
) -> None:
    gateway = await _https_gateway(
        mtls_replica, pki, tls_cert=str(pki.client.cert), tls_key=str(pki.client.key)
    )
    try:
        assert gateway.url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(
            base_url=gateway.url, verify=_trusting(pki), timeout=10
        ) as http:
            gql = graphql_over(http)
            body = await gql(
                'mutation($p: JSON!) { submitTask(input: {name: "echo", payload: $p}) { id } }',
                p={"via": "https"},
            )
            task_id = body["data"]["submitTask"]["id"]

            async def succeeded() -> dict[str, object] | None:
                reply = await gql("query($id: ID!) { task(id: $id) { state result } }", id=task_id)
                task: dict[str, object] = reply["data"]["task"]
                return task if task["state"] == "SUCCEEDED" else None

            assert (await poll(succeeded, timeout=10))["result"] == {"via": "https"}
            health = (await http.get("/health/detailed")).json()
            assert health["scheduler"]["reachable"] is True
    finally:
        await gateway.stop()


async def test_https_refuses_a_client_that_does_not_trust_its_certificate(
    mtls_replica: Replica, pki: Pki
) -> None:
    gateway = await _https_gateway(
        mtls_replica, pki, tls_cert=str(pki.client.cert), tls_key=str(pki.client.key)
    )
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get("/health")
        plain = gateway.url.replace("https://", "http://")
        async with httpx.AsyncClient(base_url=plain, timeout=5) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get("/health")
    finally:
        await gateway.stop()


async def test_a_gateway_without_a_client_certificate_finds_the_scheduler_unreachable(
    mtls_replica: Replica, pki: Pki
) -> None:
    gateway = await _https_gateway(mtls_replica, pki)
    try:
        async with httpx.AsyncClient(
            base_url=gateway.url, verify=_trusting(pki), timeout=10
        ) as http:
            response = await http.get("/health/detailed")
            assert response.status_code == 503
            assert response.json()["scheduler"]["reachable"] is False
    finally:
        await gateway.stop()
