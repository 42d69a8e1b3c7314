"""The replica's TLS files: checked before anything starts, and read again when
they change (certificate rotation without a restart)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trustme
from support import make_settings, running_replica
from tls_files import Pki, issue

from treadle.client import Client, TLSConfig, Unavailable
from treadle.common.errors import InvalidArgument
from treadle.scheduler.registry import load_app
from treadle.scheduler.supervisor import Replica


async def _answers(address: str, tls: TLSConfig) -> bool:
    """Whether a new connection with `tls` gets an answer."""
    async with Client(address, tls=tls, timeout=5) as client:
        try:
            await client.list_queues()
        except Unavailable:
            return False
        return True


def _replace(target: Path, source: Path) -> None:
    """Replace `target` as deployment tools do: write beside it, then rename over it."""
    staged = target.with_suffix(".new")
    staged.write_bytes(source.read_bytes())
    os.replace(staged, target)


async def test_a_replica_with_an_unusable_file_does_not_start(
    database_url: str, schema: str, pki: Pki, tmp_path: Path
) -> None:
    """Settings made in code skip the load-time checks; the start makes them."""
    settings = make_settings(
        schema, tls_cert=str(pki.server.cert), tls_key=str(tmp_path / "gone.key")
    )
    replica = Replica(settings, load_app("taskapp"), database_url)
    with pytest.raises(InvalidArgument, match=r"TREADLE_TLS_KEY: cannot read .*gone\.key"):
        await replica.start()
    await replica.stop()


async def test_new_files_are_served_to_new_connections(
    database_url: str, schema: str, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    cert, key = folder / "tls.crt", folder / "tls.key"
    cert.write_bytes(pki.server.cert.read_bytes())
    key.write_bytes(pki.server.key.read_bytes())
    new_ca = trustme.CA()
    new_ca.cert_pem.write_to_path(str(tmp_path / "new-ca.pem"))
    renewed = issue(new_ca, tmp_path, "renewed", "localhost", "127.0.0.1")
    old, new = TLSConfig(ca=pki.ca), TLSConfig(ca=tmp_path / "new-ca.pem")

    async with running_replica(database_url, schema, tls_cert=str(cert), tls_key=str(key)) as r:
        assert await _answers(r.address, old)
        assert not await _answers(r.address, new)

        # Half-way through (a new certificate beside the old key): still the old pair.
        _replace(cert, renewed.cert)
        with caplog.at_level(logging.WARNING, logger="treadle.tls"):
            assert await _answers(r.address, old)
        assert "is not the private key of TREADLE_TLS_CERT" in caplog.text

        _replace(key, renewed.key)
        assert await _answers(r.address, new)
        assert not await _answers(r.address, old)
