"""What a submission must be before it is stored: the rules every entry point
applies (`check_spec` and the field checks it is made of), and `NewTask`, a
submission they passed.

The scheduler's use cases (`treadle.scheduler.core`) and the client's
transactional `treadle.client.enqueue` both check submissions here, so a task
is refused the same way, with the same message naming the field, whichever
way it comes in. Imports nothing of ours but errors, the public task types
and the one JSON rule (`wire.decode_json`)."""

from __future__ import annotations

import dataclasses
import math
import unicodedata
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from treadle.common import wire
from treadle.common.errors import InvalidArgument
from treadle.common.tasks import PRIORITY_MAX, PRIORITY_MIN, RetryPolicy, TaskSpec

#: The tenant of a single-team installation, and of every row written before tenants.
DEFAULT_TENANT = "default"
#: The scheduler's default payload limits (TREADLE_MAX_PAYLOAD_BYTES and
#: TREADLE_MAX_PAYLOAD_DEPTH).
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_PAYLOAD_DEPTH = wire.MAX_JSON_DEPTH

MAX_NAME_LENGTH = 200
MAX_KEY_LENGTH = 200


@dataclasses.dataclass(frozen=True)
class NewTask:
    """A checked submission, ready to insert."""

    id: uuid.UUID
    #: The tenant the task belongs to (`DEFAULT_TENANT` without tenants).
    tenant: str
    name: str
    queue: str
    #: The payload as standard JSON text (checked, never decoded again here).
    payload_json: str
    priority: int
    run_at: datetime | None
    #: None: the queue's default.
    max_attempts: int | None
    idempotency_key: str | None
    #: None: the queue's default.
    timeout_seconds: float | None = None
    #: None: the queue's default.
    retry: RetryPolicy | None = None
    #: The submitter's W3C trace context, which the execution span continues.
    trace_context: Mapping[str, str] | None = None
    #: The API key that submitted it (None: none, or authentication off).
    submitted_by: str | None = None
    #: At most `max_concurrent` RUNNING tasks of the tenant with this key
    #: (both None: no such limit).
    concurrency_key: str | None = None
    max_concurrent: int | None = None


#: The times a request may carry (run_at, or now + delay_seconds): from the
#: Unix epoch to the start of year 9999, well inside what Python's datetime and
#: PostgreSQL both represent, with room left for any delay added to a stored
#: time (asyncpg turns datetime.max and .min into PostgreSQL's ±infinity).
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 1, 1, tzinfo=UTC)
#: The longest duration a request may give (delays, timeouts, backoffs): 100 years.
MAX_SECONDS = 100 * 365 * 24 * 3600.0
#: Unicode categories refused in names, queues and keys: control characters,
#: surrogates, line and paragraph separators.
_NOT_TEXT = frozenset({"Cc", "Cs", "Zl", "Zp"})


def check_text(value: str, field: str, max_length: int) -> None:
    """`value` must be printable text: not blank, at most `max_length`
    characters, no control characters (NUL included)."""
    if not value.strip():
        raise InvalidArgument(f"{field} must not be blank")
    if len(value) > max_length:
        raise InvalidArgument(f"{field} is longer than {max_length} characters")
    if not value.isprintable():
        for char in value:
            if unicodedata.category(char) in _NOT_TEXT:
                raise InvalidArgument(
                    f"{field} must be printable text, without control characters "
                    f"(found U+{ord(char):04X})"
                )


def check_name(value: str, field: str) -> None:
    """A task or queue name: printable text of at most `MAX_NAME_LENGTH` characters."""
    check_text(value, field, MAX_NAME_LENGTH)


def check_time(value: datetime, field: str) -> None:
    """`value` must carry a time zone and lie within `MIN_TIME`..`MAX_TIME`."""
    if value.utcoffset() is None:
        raise InvalidArgument(f"{field} must carry a time zone")
    if not MIN_TIME <= value <= MAX_TIME:
        raise InvalidArgument(
            f"{field} {value.isoformat()} is out of range "
            f"{MIN_TIME.isoformat()}..{MAX_TIME.isoformat()}"
        )


def check_seconds(value: float, field: str, *, zero: bool = True) -> None:
    """A duration in seconds: finite, not negative (nor zero unless `zero`), at
    most `MAX_SECONDS`."""
    if not math.isfinite(value):
        raise InvalidArgument(f"{field} must be a finite number, got {value}")
    if value < 0 or (value == 0 and not zero):
        raise InvalidArgument(
            f"{field} must {'not be negative' if zero else 'be positive'}, got {value}"
        )
    if value > MAX_SECONDS:
        raise InvalidArgument(f"{field} must be at most {MAX_SECONDS:.0f} (100 years), got {value}")


def check_retry(retry: RetryPolicy | None) -> None:
    if retry is None:
        return
    check_seconds(retry.base_seconds, "retry base_seconds")
    check_seconds(retry.max_seconds, "retry max_seconds")
    if not math.isfinite(retry.factor):
        raise InvalidArgument(f"retry factor must be a finite number, got {retry.factor}")
    if retry.factor < 1:
        raise InvalidArgument(f"retry factor must be at least 1, got {retry.factor}")


def check_timeout(timeout: float | None, zero_allowed: bool = False) -> None:
    if timeout is None or (zero_allowed and timeout == 0):
        return
    check_seconds(timeout, "timeout_seconds", zero=False)


#: The most tasks of one concurrency key that may run at once.
MAX_CONCURRENT = 1_000_000


def check_concurrency(key: str | None, limit: int | None) -> None:
    """A concurrency key is printable text like an idempotency key, and comes
    with its limit, 1..`MAX_CONCURRENT`; neither is fine."""
    if key is None and limit is None:
        return
    if key is None:
        raise InvalidArgument("max_concurrent needs a concurrency_key")
    check_text(key, "concurrency_key", MAX_KEY_LENGTH)
    if limit is None:
        raise InvalidArgument("concurrency_key needs max_concurrent (at least 1)")
    if not 1 <= limit <= MAX_CONCURRENT:
        raise InvalidArgument(f"max_concurrent must be 1..{MAX_CONCURRENT}, got {limit}")


def check_spec(
    spec: TaskSpec,
    default_queue: str,
    max_payload_bytes: int,
    now: datetime,
    trace_context: Mapping[str, str] | None = None,
    max_payload_depth: int = wire.MAX_JSON_DEPTH,
    *,
    tenant: str,
    submitted_by: str | None = None,
) -> NewTask:
    """Turn a submission into a `NewTask`, or raise `InvalidArgument` naming the
    field that is wrong. Every field is checked here, before anything is stored."""
    if not spec.name:
        raise InvalidArgument("task name must not be empty")
    check_name(spec.name, "task name")
    # UTF-8 bytes of the text, however it arrived (a lone surrogate counts 3 and
    # is refused by decode_json).
    size = len(spec.payload_json.encode("utf-8", "surrogatepass"))
    if size > max_payload_bytes:
        raise InvalidArgument(
            f"payload is {size} bytes, over the limit of {max_payload_bytes} bytes"
        )
    # The one parse: standard JSON only, nesting bounded, nothing jsonb refuses.
    wire.decode_json(spec.payload_json, "payload", max_payload_depth)
    if not PRIORITY_MIN <= spec.priority <= PRIORITY_MAX:
        raise InvalidArgument(
            f"priority {spec.priority} is out of range {PRIORITY_MIN}..{PRIORITY_MAX}"
        )
    if spec.max_attempts is not None and spec.max_attempts < 1:
        raise InvalidArgument(f"max_attempts must be at least 1, got {spec.max_attempts}")
    check_timeout(spec.timeout_seconds)
    check_retry(spec.retry)
    queue = spec.queue or default_queue
    check_name(queue, "queue")
    if spec.idempotency_key is not None:
        check_text(spec.idempotency_key, "idempotency_key", MAX_KEY_LENGTH)
    check_concurrency(spec.concurrency_key, spec.max_concurrent)
    run_at = spec.run_at
    if run_at is not None:
        check_time(run_at, "run_at")
    if spec.delay_seconds is not None:
        if spec.run_at is not None:
            raise InvalidArgument("give run_at or delay_seconds, not both")
        check_seconds(spec.delay_seconds, "delay_seconds")
        run_at = now + timedelta(seconds=spec.delay_seconds)
        if run_at > MAX_TIME:
            raise InvalidArgument(
                f"delay_seconds {spec.delay_seconds} puts run_at past {MAX_TIME.isoformat()}"
            )
    return NewTask(
        id=uuid.uuid4(),
        tenant=tenant,
        name=spec.name,
        queue=queue,
        payload_json=spec.payload_json,
        priority=spec.priority,
        run_at=run_at,
        max_attempts=spec.max_attempts,
        idempotency_key=spec.idempotency_key,
        timeout_seconds=spec.timeout_seconds,
        retry=spec.retry,
        trace_context=trace_context,
        submitted_by=submitted_by,
        concurrency_key=spec.concurrency_key,
        max_concurrent=spec.max_concurrent,
    )
