"""A tenant's admin manages its own API keys over the API (CreateKey,
ListKeys, RevokeKey, RotateKey): the token shown once, scopes as asked, each
change in the audit log under the admin's key; only admin keys may."""

from __future__ import annotations

import pytest
from auth_support import authed_replica, make_key

from treadle.client import Client
from treadle.common import errors
from treadle.scheduler.principal import Scope


async def test_an_admin_manages_its_tenants_keys_over_the_api(
    database_url: str, schema: str
) -> None:
    async with authed_replica(database_url, schema) as replica:
        admin_token = await make_key(replica, [Scope.ADMIN], tenant="acme", name="ops")
        async with Client(replica.address, api_key=admin_token) as admin:
            made = await admin.create_key("ci", ["submit"], expires_in_seconds=3600)
            assert made.token.startswith(f"trdl_{made.key.id}_")
            assert made.key.scopes == ("submit",) and made.key.status == "active"
            assert made.key.expires_at is not None
            async with Client(replica.address, api_key=made.token) as ci:
                task = await ci.submit("echo", 1)
                with pytest.raises(errors.PermissionDenied):
                    await ci.list_keys()
                with pytest.raises(errors.PermissionDenied):
                    await ci.create_key("more", ["admin"])
            assert (await admin.get(task.id)).id == task.id, "in the admin's tenant"

            rotated = await admin.rotate_key(made.key.id, grace_seconds=60)
            assert rotated.key.rotated_from == made.key.id and rotated.token != made.token
            for token in (made.token, rotated.token):  # both work during the grace period
                async with Client(replica.address, api_key=token) as either:
                    await either.submit("echo", 2)

            revoked = await admin.revoke_key(rotated.key.id)
            assert revoked.status == "revoked"
            listed = {k.id: k for k in await admin.list_keys()}
            assert listed[rotated.key.id].status == "revoked"
            assert {k.name for k in listed.values()} == {"ops", "ci"}

            events, _ = await admin.audit_events()
            actions = [(e.action, e.key_name) for e in events]
            for action in ("CreateKey", "RotateKey", "RevokeKey"):
                assert (action, "ops") in actions, actions


async def test_bad_key_requests_are_refused_clearly(database_url: str, schema: str) -> None:
    async with authed_replica(database_url, schema) as replica:
        token = await make_key(replica, [Scope.ADMIN])
        async with Client(replica.address, api_key=token) as admin:
            with pytest.raises(errors.InvalidArgument, match="scope"):
                await admin.create_key("x", ["everything"])
            with pytest.raises(errors.InvalidArgument, match="expires_in_seconds"):
                await admin.create_key("x", ["read"], expires_in_seconds=-1)
            with pytest.raises(errors.InvalidArgument, match="grace_seconds"):
                await admin.rotate_key("0" * 16, grace_seconds=float("nan"))
            with pytest.raises(errors.NotFound):
                await admin.revoke_key("0" * 16)
