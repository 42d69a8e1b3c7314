"""Who is calling: the tenant a call acts in, the key it came with and what that
key may do. The scheduler's one notion of identity.

Every use case that reads or writes a tenant's objects takes the tenant as its
first argument; the gRPC edge takes it from `current()`, which the
authentication interceptor sets for the call (`treadle.scheduler.auth`). With
authentication off, every call acts in `DEFAULT_TENANT` with every scope.
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum

from treadle.common import submission

#: The tenant of a single-team installation, and of every row written before tenants.
DEFAULT_TENANT = submission.DEFAULT_TENANT


class Scope(enum.StrEnum):
    """What a key may do. `submit`: submit tasks and read them; `read`: read
    tasks, queues, schedules and statistics; `admin`: everything, including
    queues, schedules, cancel, retry and keys."""

    SUBMIT = "submit"
    READ = "read"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one call."""

    tenant: str
    scopes: frozenset[Scope]
    #: The API key's id and name; None when authentication is off.
    key_id: str | None = None
    key_name: str | None = None
    #: The first key of the rotation chain this key belongs to (its own id when
    #: it replaced none): what its tasks record as their submitter, so a
    #: rotated key still reads what its predecessor submitted.
    lineage: str | None = None

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    @property
    def submitter(self) -> str | None:
        """What a task this caller submits records as its submitter: its key's
        `lineage` (None without a key)."""
        return self.lineage or self.key_id

    @property
    def submitted_by(self) -> str | None:
        """Whose submissions this caller reads: None, all of its tenant's
        (`read` or `admin`); with `submit` only, those of its own key and the
        keys it rotated from or into (`lineage`)."""
        if self.allows(Scope.READ):
            return None
        return self.submitter or ""


#: A call when authentication is off: the default tenant, every scope.
ANONYMOUS = Principal(DEFAULT_TENANT, ALL_SCOPES)

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "treadle_principal", default=ANONYMOUS
)


def current() -> Principal:
    """The caller of the call being served (`ANONYMOUS` outside any call, or
    when authentication is off)."""
    return _current.get()


def acting_as(principal: Principal) -> contextvars.Token[Principal]:
    """Make `principal` the current caller (until `_current.reset(token)`)."""
    return _current.set(principal)


def reset(token: contextvars.Token[Principal]) -> None:
    _current.reset(token)
