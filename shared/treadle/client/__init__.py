"""The Python client for Treadle's SchedulerService.

    async with Client("127.0.0.1:50051") as client:
        task = await client.submit("echo", {"hello": "world"})
        done = await client.wait(task.id, timeout=10)

Over TLS, pass what to trust (and, for mutual TLS, the client's certificate):

    Client("scheduler.internal:50051", tls=TLSConfig(ca="ca.pem", cert="me.pem", key="me.key"))

Calls return the plain dataclasses of `treadle.common.tasks` and raise
Treadle's errors (`treadle.common.errors`), never raw gRPC errors.
`SyncClient` offers the same calls for code without an event loop.

To store a task in your own database transaction (it exists, and replicas
wake, only if that commits), `await enqueue(conn, "email.send", payload)` on
an asyncpg or psycopg connection (`treadle.client.enqueue`).

With authentication on, give the client an API key: `Client(address,
api_key="trdl_...")`. A server calling for many callers through one client
gives each call its caller's key with `credentials(key)`.
"""

from treadle.client._async import Client, credentials
from treadle.client._sync import SyncClient
from treadle.client.enqueue import Enqueued, SupportsSpec, enqueue, enqueue_sync
from treadle.common.audit import AuditEvent
from treadle.common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    InvalidState,
    NotFound,
    PermissionDenied,
    TreadleError,
    Unauthenticated,
    Unavailable,
)
from treadle.common.keys_wire import KeyInfo, MadeKey
from treadle.common.stats import (
    Alert,
    ErrorPattern,
    Granularity,
    Overview,
    QueueStats,
    SystemHealth,
    SystemStatus,
    TrendBucket,
    Trends,
)
from treadle.common.tasks import (
    BulkResult,
    Queue,
    RetryPolicy,
    Schedule,
    Submitted,
    Task,
    TaskError,
    TaskPage,
    TaskSelection,
    TaskSpec,
    TaskState,
)
from treadle.common.tls import TLSConfig

__all__ = [
    "Alert",
    "AuditEvent",
    "BulkResult",
    "Client",
    "DeadlineExceeded",
    "Enqueued",
    "ErrorPattern",
    "Granularity",
    "InvalidArgument",
    "InvalidState",
    "KeyInfo",
    "MadeKey",
    "NotFound",
    "Overview",
    "PermissionDenied",
    "Queue",
    "QueueStats",
    "RetryPolicy",
    "Schedule",
    "Submitted",
    "SupportsSpec",
    "SyncClient",
    "SystemHealth",
    "SystemStatus",
    "TLSConfig",
    "Task",
    "TaskError",
    "TaskPage",
    "TaskSelection",
    "TaskSpec",
    "TaskState",
    "TreadleError",
    "TrendBucket",
    "Trends",
    "Unauthenticated",
    "Unavailable",
    "credentials",
    "enqueue",
    "enqueue_sync",
]
