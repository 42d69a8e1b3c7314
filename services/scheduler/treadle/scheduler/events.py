"""What happens to tasks, told to whoever watches: the one seam between the use
cases (`core`, `worker`, `schedules`) and what observes them (`metrics`, `stats`).

The use cases call one `Events` and never know who listens, nor whether anyone
does: `Events` itself does nothing with each event (an observer subclasses it
and overrides what it counts), and `Fanout` hands each event to several
observers in turn. An event is a plain, synchronous call made after the fact;
an observer must not wait, nor fail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from treadle.common.tasks import Submitted
from treadle.scheduler.model import Applied, ClaimedTask, Lease, Outcome

if TYPE_CHECKING:
    from treadle.scheduler.store import Reclaimed


#: What a flush applied: by lease, the outcomes whose lease still held.
AppliedByLease = Mapping[Lease, Applied]


class Events:
    """What happened, each event a method; this base does nothing with any of
    them, so an observer overrides only what it counts."""

    def submitted(self, tenant: str, results: Sequence[Submitted]) -> None:
        """A submission (through the API, or a cron schedule firing) stored
        these tasks of `tenant`, or found them by idempotency key (`existing`)."""

    def cancelled(self, tenant: str, queue: str) -> None:
        """A waiting task of `tenant`'s `queue` was cancelled at once."""

    def claimed(self, count: int, seconds: float) -> None:
        """A claim round took `seconds` and claimed `count` tasks."""

    def started(self, task: ClaimedTask) -> None:
        """An attempt of `task` started here."""

    def ended(self, task: ClaimedTask, outcome: Outcome, seconds: float | None) -> None:
        """An attempt's outcome was decided here; its handler ran `seconds`
        (None: it never ran, the task was cancelled before it started)."""

    def flushed(self, batch: Sequence[Outcome], applied: AppliedByLease, seconds: float) -> None:
        """`batch` was written in `seconds`; `applied` are those whose lease
        still held, by lease, as the store applied them."""

    def reclaimed(self, rows: Sequence[Reclaimed]) -> None:
        """The lease reaper took these tasks back from a replica that stopped
        renewing them (QUEUED again, or DEAD after too many losses)."""

    def poisoned(self, task_id: str, stage: str, reason: str) -> None:
        """A task's stored row could not be handled at `stage` (promote, claim,
        run or record: a row written by hand, or by older code), and the task
        ended DEAD saying `reason`."""

    def schedule_poisoned(self, name: str, reason: str) -> None:
        """A schedule's stored row could not be fired (written by hand, or by
        older code), and the schedule was paused; `reason` says why."""


#: Nobody listens.
NOTHING = Events()


class Fanout(Events):
    """Each event to every observer, in the order given."""

    def __init__(self, *observers: Events) -> None:
        self.observers = observers

    def submitted(self, tenant: str, results: Sequence[Submitted]) -> None:
        for o in self.observers:
            o.submitted(tenant, results)

    def cancelled(self, tenant: str, queue: str) -> None:
        for o in self.observers:
            o.cancelled(tenant, queue)

    def claimed(self, count: int, seconds: float) -> None:
        for o in self.observers:
            o.claimed(count, seconds)

    def started(self, task: ClaimedTask) -> None:
        for o in self.observers:
            o.started(task)

    def ended(self, task: ClaimedTask, outcome: Outcome, seconds: float | None) -> None:
        for o in self.observers:
            o.ended(task, outcome, seconds)

    def flushed(self, batch: Sequence[Outcome], applied: AppliedByLease, seconds: float) -> None:
        for o in self.observers:
            o.flushed(batch, applied, seconds)

    def reclaimed(self, rows: Sequence[Reclaimed]) -> None:
        for o in self.observers:
            o.reclaimed(rows)

    def poisoned(self, task_id: str, stage: str, reason: str) -> None:
        for o in self.observers:
            o.poisoned(task_id, stage, reason)

    def schedule_poisoned(self, name: str, reason: str) -> None:
        for o in self.observers:
            o.schedule_poisoned(name, reason)
