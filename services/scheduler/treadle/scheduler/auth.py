"""Who may call what: the scope each SchedulerService method needs (`RULES`),
and the server interceptor that authenticates every call, checks its scope,
makes its caller the current `Principal` while the method runs, and records
admin changes in the audit log.

With authentication on (TREADLE_AUTH=keys) a call must carry
`authorization: Bearer trdl_…` metadata: without it, or with a malformed,
unknown, expired or revoked key, the call ends UNAUTHENTICATED; with a key
whose scopes do not allow the method, PERMISSION_DENIED. Either message says
what was wrong. With authentication off every call is `principal.ANONYMOUS`.
grpc.health.v1 and reflection are open either way.

Scopes: `submit` submits tasks and reads the tasks its key submitted (the
methods marked `own`: the servicer narrows what such a caller sees, see
`own_only`); `read` reads tasks, queues, schedules and statistics; `admin`
may call everything. After a successful call of a method marked `audited`
(admin changes), one row goes to the audit log: the method as the action,
the request's id or name as the target, the request's fields as the change
(payloads left out).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import typing
from collections.abc import AsyncGenerator, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from treadle.common import access, errors, grpc_wrap, status
from treadle.scheduler import principal
from treadle.scheduler.audit import AuditLog
from treadle.scheduler.keys import Authenticator
from treadle.scheduler.principal import Principal, Scope

log = logging.getLogger("treadle.scheduler.auth")

#: The service whose methods need a key (health and reflection are open).
SERVICE = "treadle.api.v1.SchedulerService"
_METHOD_PREFIX = f"/{SERVICE}/"
#: Request fields left out of an audit event's change: a payload is the
#: user's data, and may hold their secrets.
REDACTED = frozenset({"payload"})
_BEARER = f"{access.SCHEME} "


@dataclasses.dataclass(frozen=True)
class Rule:
    """Who may call a method."""

    #: The scope it needs (an `admin` key has every scope).
    scope: Scope
    #: A `submit` key may call it too, for the tasks it submitted only.
    own: bool = False
    #: A successful call is recorded in the audit log.
    audited: bool = False


SUBMIT = Rule(Scope.SUBMIT)
READ = Rule(Scope.READ)
READ_OWN = Rule(Scope.READ, own=True)
ADMIN_READ = Rule(Scope.ADMIN)
ADMIN_CHANGE = Rule(Scope.ADMIN, audited=True)

#: Every SchedulerService method and who may call it. A method missing here
#: is refused to every key (and a test fails).
RULES: dict[str, Rule] = {
    "SubmitTask": SUBMIT,
    "SubmitTasks": SUBMIT,
    "SubmitTaskGroup": SUBMIT,
    "GetTask": READ_OWN,
    "GetTasks": READ_OWN,
    "ListTasks": READ_OWN,
    "WatchTask": READ_OWN,
    "CancelTask": ADMIN_CHANGE,
    "RetryTask": ADMIN_CHANGE,
    "CountTasks": READ_OWN,
    "RetryTasks": ADMIN_CHANGE,
    "CancelTasks": ADMIN_CHANGE,
    "PurgeTasks": ADMIN_CHANGE,
    "ListQueues": READ,
    "GetQueue": READ,
    "UpdateQueue": ADMIN_CHANGE,
    "PauseQueue": ADMIN_CHANGE,
    "ResumeQueue": ADMIN_CHANGE,
    "CreateSchedule": ADMIN_CHANGE,
    "ListSchedules": READ,
    "PauseSchedule": ADMIN_CHANGE,
    "ResumeSchedule": ADMIN_CHANGE,
    "DeleteSchedule": ADMIN_CHANGE,
    "ListReplicas": READ,
    "GetHealth": READ,
    "GetQueueStats": READ,
    "ListQueueStats": READ,
    "GetOverview": READ,
    "GetTrends": READ,
    "GetErrorPatterns": READ,
    "GetSystemHealth": READ,
    "ListAuditEvents": ADMIN_READ,
    # Key changes are audited by the key store, in their own transaction.
    "CreateKey": ADMIN_READ,
    "ListKeys": ADMIN_READ,
    "RevokeKey": ADMIN_READ,
    "RotateKey": ADMIN_READ,
}


def allowed(caller: Principal, rule: Rule) -> bool:
    return caller.allows(rule.scope) or (rule.own and caller.allows(Scope.SUBMIT))


def own_only(caller: Principal) -> bool:
    """Whether `caller` may read only the tasks its key submitted (a `submit`
    key without `read`): the servicer's reads filter on the key's id."""
    return not caller.allows(Scope.READ)


def bearer_token(metadata: Any) -> str:
    """The token of a call's `authorization: Bearer <token>` metadata;
    `Unauthenticated` when there is none or it is not a bearer token."""
    value: Any = None
    for key, found in metadata or ():
        if key == access.HEADER:
            if value is not None:
                raise errors.Unauthenticated("more than one authorization metadata entry")
            value = found
    if value is None:
        raise errors.Unauthenticated(
            "no API key: send `authorization: Bearer <key>` metadata "
            "(Client(api_key=...), or TREADLE_API_KEY / --api-key for the treadle command)"
        )
    if isinstance(value, str) and value.startswith(_BEARER):
        token: str = value[len(_BEARER) :].strip()
    else:
        scheme, _, rest = (value if isinstance(value, str) else "").partition(" ")
        token = rest.strip() if scheme.lower() == access.SCHEME.lower() else ""
    if not token:
        raise errors.Unauthenticated(
            "malformed authorization metadata: expected `Bearer <API key>`"
        )
    return token


def _target(request: Message) -> str:
    """What an admin call acted on: the request's `id` or `name`, else that of
    the message it carries (CreateSchedule's schedule); for a bulk call, the
    queue its selection names (the whole selection is the change)."""
    fields = request.DESCRIPTOR.fields_by_name
    if "selection" in fields:
        return str(typing.cast(Any, request).selection.queue)
    for name in ("id", "name"):
        if name in fields:
            return str(getattr(request, name))
    for _, value in request.ListFields():
        if isinstance(value, Message):
            return _target(value)
    return ""


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items() if k not in REDACTED}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def change_of(request: Message) -> dict[str, Any]:
    """The request's fields as JSON, without `REDACTED` ones."""
    data = json_format.MessageToDict(request, preserving_proto_field_name=True)
    redacted: dict[str, Any] = _redacted(data)
    return redacted


Behavior = Callable[..., Any]
Context = grpc.aio.ServicerContext[Any, Any]


class Interceptor(grpc_wrap.MethodWrapper):
    """Authentication, authorization and the audit of admin changes, for every
    SchedulerService call. `authenticator` None: authentication is off (every
    caller is `ANONYMOUS`; admin changes are still audited when `audit` is given).

    Put it after the interceptors that observe calls (metrics, tracing), so that
    they see its refusals, and before `rpc.DecodeGuard`: a call is
    authenticated before its request is looked at."""

    def __init__(self, authenticator: Authenticator | None, audit: AuditLog | None = None) -> None:
        super().__init__()
        self.authenticator = authenticator
        self.audit = audit

    def wrap(self, handler: Any, full_method: str) -> Any:
        if handler is None or not full_method.startswith(_METHOD_PREFIX):
            return handler  # unknown (UNIMPLEMENTED), health, reflection
        method = full_method.removeprefix(_METHOD_PREFIX)
        rule = RULES.get(method)
        if rule is None:
            log.error("no access rule for %s: every call of it is refused", method)
        elif self.authenticator is None and not (rule.audited and self.audit is not None):
            return handler  # nothing to do: no cost
        behavior = grpc_wrap.async_behavior(handler)
        if behavior is None:
            return handler  # SchedulerService has no client-streaming or sync method
        return grpc_wrap.rewrapped(handler, self._guarded(behavior, method, rule))

    async def _caller(self, context: Context, method: str, rule: Rule | None) -> Principal:
        """The call's principal, or the call ends with its refusal."""
        try:
            if self.authenticator is None:
                caller = principal.ANONYMOUS
            else:
                token = bearer_token(context.invocation_metadata())
                caller = await self.authenticator.authenticate(token)
            if rule is None:
                raise errors.PermissionDenied(f"{method} has no access rule: nobody may call it")
            if not allowed(caller, rule):
                raise errors.PermissionDenied(_denial(caller, method, rule))
            return caller
        except errors.TreadleError as exc:
            code, message = status.to_grpc(exc), exc.message
        except Exception:
            log.exception("authenticating a call of %s failed", method)
            code, message = grpc.StatusCode.INTERNAL, errors.Internal().message
        # abort() raises, so it must run outside the handlers above.
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")

    async def _record(self, caller: Principal, method: str, request: Message) -> None:
        """Audit one admin change that succeeded; a failure to write is logged
        (the change is made: the call does not fail for it)."""
        if self.audit is None:
            return
        try:
            await self.audit.record(caller, method, _target(request), change_of(request))
        except Exception:
            log.exception("could not record %s by %s in the audit log", method, caller.key_name)

    def _guarded(self, behavior: Behavior, method: str, rule: Rule | None) -> Behavior:
        audited = rule is not None and rule.audited
        if inspect.isasyncgenfunction(behavior):

            async def streaming(request: Any, context: Context) -> AsyncGenerator[Any, None]:
                caller = await self._caller(context, method, rule)
                # Set in the call's own task, for the rest of it: a generator
                # may be closed from another context, where no reset can run.
                principal.acting_as(caller)
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response

            return streaming

        async def unary(request: Any, context: Context) -> Any:
            caller = await self._caller(context, method, rule)
            token = principal.acting_as(caller)
            try:
                response = await behavior(request, context)
            finally:
                principal.reset(token)
            if audited:
                await self._record(caller, method, request)
            return response

        return unary


def _denial(caller: Principal, method: str, rule: Rule) -> str:
    scopes = ", ".join(sorted(s.value for s in caller.scopes)) or "none"
    needs = f"the {rule.scope.value} scope" + (
        " (or submit, for its own tasks)" if rule.own else ""
    )
    return f"API key {caller.key_name!r} (scopes: {scopes}) may not call {method}: it needs {needs}"
