"""An audit log event (an admin action), as a plain dataclass, and its protobuf
form: the scheduler writes them (`treadle.scheduler.audit`), `ListAuditEvents`
sends them, `treadle.client.Client.audit_events()` and `treadle audit` read them.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.common import wire


@dataclasses.dataclass(frozen=True)
class AuditEvent:
    id: int
    tenant: str
    at: datetime
    #: The key the action was made with; None with authentication off, or for
    #: direct database access (then `key_name` is `cli:<user>`).
    key_id: str | None
    key_name: str | None
    #: A gRPC method (`PauseQueue`) or a key action (`CreateKey`, `RevokeKey`, `RotateKey`).
    action: str
    #: The id or name of what it acted on.
    target: str
    #: What changed (the request's fields, payloads left out).
    change: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["at"] = self.at.isoformat()
        return data


def audit_event_to_proto(event: AuditEvent) -> pb.AuditEvent:
    message = pb.AuditEvent(
        id=event.id,
        tenant=event.tenant,
        key_id=event.key_id or "",
        key_name=event.key_name or "",
        action=event.action,
        target=event.target,
        change=json.dumps(event.change, default=str),
    )
    wire.time_to_proto(event.at, message.at, "at")
    return message


def audit_event_from_proto(message: pb.AuditEvent) -> AuditEvent:
    change = json.loads(message.change) if message.change else {}
    return AuditEvent(
        id=message.id,
        tenant=message.tenant,
        at=wire.time_from_proto(message, "at") or datetime.fromtimestamp(0, UTC),
        key_id=message.key_id or None,
        key_name=message.key_name or None,
        action=message.action,
        target=message.target,
        change=change if isinstance(change, dict) else {"value": change},
    )
