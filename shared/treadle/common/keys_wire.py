"""API keys as the `ApiKey` message carries them: what a tenant's admin sees of
its keys over the API (never a secret; a token only in the reply that made it).
Both ends use these: the scheduler (`keys.ApiKey` → message) and the client."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.common import wire


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """One API key of the caller's tenant."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    #: The key this one replaced (rotation); None for none.
    rotated_from: str | None
    #: active, expired or revoked.
    status: str


@dataclasses.dataclass(frozen=True)
class MadeKey:
    """A key just made, with its whole token: shown this once."""

    key: KeyInfo
    token: str


def key_to_proto(
    *,
    id: str,
    name: str,
    scopes: Sequence[str],
    created_at: datetime | None,
    expires_at: datetime | None,
    revoked_at: datetime | None,
    last_used_at: datetime | None,
    rotated_from: str | None,
    status: str,
) -> pb.ApiKey:
    message = pb.ApiKey(
        id=id, name=name, scopes=list(scopes), rotated_from=rotated_from or "", status=status
    )
    wire.time_to_proto(created_at, message.created_at, "created_at")
    wire.time_to_proto(expires_at, message.expires_at, "expires_at")
    wire.time_to_proto(revoked_at, message.revoked_at, "revoked_at")
    wire.time_to_proto(last_used_at, message.last_used_at, "last_used_at")
    return message


def key_from_proto(message: pb.ApiKey) -> KeyInfo:
    return KeyInfo(
        id=message.id,
        name=message.name,
        scopes=tuple(message.scopes),
        created_at=wire.time_from_proto(message, "created_at"),
        expires_at=wire.time_from_proto(message, "expires_at"),
        revoked_at=wire.time_from_proto(message, "revoked_at"),
        last_used_at=wire.time_from_proto(message, "last_used_at"),
        rotated_from=message.rotated_from or None,
        status=message.status,
    )
