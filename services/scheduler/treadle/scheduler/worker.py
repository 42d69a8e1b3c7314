"""The worker: claims ready tasks, runs them, and records their outcomes.

Its loops, which the supervisor starts as named tasks (`loops()`):

- `dispatch`: claims up to the free capacity in one statement (only tasks
  this replica has handlers for, of its `--queues`), starts each handler as
  an asyncio task, then sleeps until a NOTIFY, a freed slot, the
  end of a full start-limit window, or the poll interval;
- `promote`: turns scheduled and retrying tasks into ready ones when their
  time comes, sleeping until the next one is due;
- `flush`: writes finished outcomes in batches, every few milliseconds;
- `heartbeat`: renews the lease of every task running here, in one statement;
- `reap`: takes back tasks whose lease expired (their replica died);
- `prune`: deletes finished tasks past the retention period and frees expired
  idempotency keys, in small batches.

What happens (claims, attempts, flushes, reclaimed tasks) is told to one
`events.Events`; the worker does not know who listens.

A cancel asked for on another replica arrives through `cancel()`: a coroutine
handler is cancelled (it sees `asyncio.CancelledError`), a sync handler's
result is discarded.

`drain()` stops claiming, lets running handlers finish up to a timeout, and
hands the rest back without charging their attempt (a handler with a
`TaskContext` sees `ctx.cancelled`; a sync one gets a second to return),
except those whose sync handler still runs in its thread (it cannot be
stopped): those stay leased
(`stranded`) until the process has exited and their lease expired, so they
never run twice at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import timedelta

from treadle.common import telemetry
from treadle.common.errors import TreadleError
from treadle.common.tasks import TaskError, TaskState
from treadle.common.wakeup import wait_event
from treadle.scheduler import task_log
from treadle.scheduler.core import Collaborators
from treadle.scheduler.executor import Executor
from treadle.scheduler.loops import Backoff, Loop
from treadle.scheduler.model import Applied, ClaimedTask, Lease, Outcome, ended
from treadle.scheduler.registry import Handler
from treadle.tasks import TaskContext

log = logging.getLogger("treadle.scheduler.worker")

#: How long, and for how many ids at most, a cancel for a task that is not
#: running here is remembered, in case its claim is on the way.
EARLY_CANCEL_SECONDS = 10.0
EARLY_CANCELS_MAX = 10_000
#: The error type of a task ended DEAD because its stored row could not be
#: handled (promoted, claimed, run or recorded): see docs/operations.md.
POISON_ERROR = "PoisonTask"


@dataclasses.dataclass(eq=False)
class Worker(Collaborators):
    def __post_init__(self) -> None:
        self.owner = self.settings.replica_id
        self.executor = Executor(
            self.settings.executor_threads,
            self.clock,
            tracer=self.tracer,
            max_result_depth=self.settings.max_payload_depth,
        )
        self._running: dict[str, tuple[asyncio.Task[None], ClaimedTask]] = {}
        #: The TaskContext of each running task whose handler asked for one.
        self._contexts: dict[str, TaskContext] = {}
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._outcomes: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._handed_back: set[str] = set()
        self._cancelled: set[str] = set()
        #: Cancels asked for tasks not (yet) running here, by monotonic time.
        self._early_cancels: dict[str, float] = {}
        self._due = asyncio.Event()
        self._claiming = True
        #: Clear while a claim is in flight (until its tasks have started).
        self._idle = asyncio.Event()
        self._idle.set()
        self._forced = asyncio.Event()
        self.claimed_total = 0
        self.completed_total = 0
        self.stale_total = 0
        self.leases_extended_total = 0
        self.leases_lost_total = 0
        self.reclaimed_total = 0
        #: After `drain()`: tasks whose sync handler was still running in its
        #: thread, not handed back (the process must exit: see `__main__`).
        self.stranded: list[str] = []

    def loops(self) -> dict[str, Loop]:
        # Dispatch first: it starts first, so that the replica's first claim
        # takes an idle connection of the pool instead of waiting behind the
        # other loops' first statements for a new one.
        return {
            "dispatch": self.dispatch,
            "heartbeat": self.heartbeat,
            "reap": self.reap,
            "promote": self.promote,
            "flush": self.flush,
            "prune": self.prune,
        }

    # -- signals from outside -------------------------------------------------

    def wake(self) -> None:
        """Tasks may be ready: claim now."""
        self._wake.set()

    def wake_promoter(self) -> None:
        """Scheduled or retrying tasks may be due sooner than planned."""
        self._due.set()

    def catch_up(self) -> None:
        """Notifications may have been missed (the database or the LISTEN
        connection came back): claim and promote now."""
        self.wake()
        self.wake_promoter()

    def on_ready(self, payload: str) -> None:
        """A NOTIFY on the ready channel: 'due' means a task was scheduled,
        'keyed' that tasks with a concurrency key are ready, anything else ready."""
        if payload == "due":
            self._due.set()
            return
        if payload == "keyed":
            self.store.look_for_limits()
        self._wake.set()

    def cancel(self, task_id: str) -> bool:
        """Cancel a task running here; False when it does not run here. Such
        an id is remembered for a while: the cancel may have overtaken the
        claim that brings the task here (NOTIFY and claim reply race)."""
        entry = self._running.get(task_id)
        if entry is None:
            now = time.monotonic()
            if len(self._early_cancels) >= EARLY_CANCELS_MAX:
                recent = now - EARLY_CANCEL_SECONDS
                self._early_cancels = {i: t for i, t in self._early_cancels.items() if t > recent}
            if len(self._early_cancels) < EARLY_CANCELS_MAX:
                self._early_cancels[task_id] = now
            return False
        self._cancelled.add(task_id)
        self._stop_context(task_id)
        entry[0].cancel()
        log.debug("cancelling running task %s", task_id)  # logged at INFO once it ends
        return True

    def force(self) -> None:
        """Cut a drain in progress short (a second SIGTERM/SIGINT)."""
        self._forced.set()

    @property
    def running(self) -> int:
        return len(self._running)

    # -- dispatch -------------------------------------------------------------

    async def dispatch(self) -> None:
        backoff = Backoff(log)
        min_claim = max(1, self.settings.concurrency // 4)
        while self._claiming:
            free = self.settings.concurrency - len(self._running)
            if 0 < free < min_claim:
                # Busy: let a few more slots free up so claims stay batched
                # (one statement for many rows), at most a flush interval.
                await asyncio.sleep(self.settings.flush_interval)
                free = self.settings.concurrency - len(self._running)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            self._wake.clear()
            try:
                tasks = await self._claim(free)
            except TreadleError as exc:
                await backoff.failed("claim", exc)
                continue
            backoff.ok()
            if len(tasks) < free and self._claiming:
                # A start-limited queue whose window is full is looked at
                # again when its window ends, not before (nor later).
                held = self.store.held_for()
                wait = self.settings.poll_interval if held is None else held
                await wait_event(self._wake, min(self.settings.poll_interval, wait))

    async def _claim(self, free: int) -> list[ClaimedTask]:
        """Claim up to `free` tasks this replica can run, and start them. A
        drain waits (on `_idle`) until this is over, so that it sees them."""
        self._idle.clear()
        try:
            began = time.perf_counter()
            # Only tasks this replica has handlers for, of its queues (--queues).
            tasks = await self.store.claim(
                self.owner,
                free,
                self.settings.lease_seconds,
                self.registry.names,
                self.settings.claimed_queues,
            )
            self.events.claimed(len(tasks), time.perf_counter() - began)
            for task in tasks:
                if task.poison is not None:
                    self._record(self._poisoned(task, "claim", task.poison))
                else:
                    self._start(task)
            return tasks
        finally:
            self._idle.set()

    def _start(self, task: ClaimedTask) -> None:
        handler = self.registry.get(task.name)
        assert handler is not None
        self.claimed_total += 1
        asked_at = self._early_cancels.pop(task.id, None)
        asked_early = asked_at is not None and time.monotonic() - asked_at < EARLY_CANCEL_SECONDS
        if task.cancel_requested or asked_early:
            cancelled = ended(task, TaskState.CANCELLED, self.clock())
            self.events.ended(task, cancelled, None)
            task_log.attempt_ended(task, cancelled, ran=False)
            self._record(cancelled)
            return
        self.events.started(task)
        context = self._context(task) if handler.definition.context_parameter else None
        runner = asyncio.create_task(
            self._attempt(task, handler, context), name=f"treadle-task-{task.id}"
        )
        self._running[task.id] = (runner, task)
        runner.add_done_callback(lambda _: self._finished(task.id))

    def _context(self, task: ClaimedTask) -> TaskContext:
        """The TaskContext of `task`'s attempt: its `heartbeat` stores progress
        under the attempt's lease; `cancelled` is set by `_stop_context`."""
        timeout = task.timeout_seconds
        lease = task.lease

        async def report(progress: float | None, message: str | None) -> bool:
            try:
                return await self.store.progress(lease, progress, message)
            except TreadleError as exc:  # the database is away: the work goes on
                log.warning("could not store the progress of task %s: %s", lease.task_id, exc)
                return True

        context = TaskContext(
            id=task.id,
            name=task.name,
            queue=task.queue,
            attempt=task.attempts,
            max_attempts=task.max_attempts,
            deadline=self.clock() + timedelta(seconds=timeout) if timeout else None,
            trace_id=telemetry.trace_id_of(task.trace_context),
            _reporter=report,
            _loop=asyncio.get_running_loop(),
        )
        self._contexts[task.id] = context
        return context

    def _stop_context(self, task_id: str) -> None:
        """Tell a running handler to stop (cancelled, lease lost, handed back)."""
        context = self._contexts.get(task_id)
        if context is not None:
            context.cancelled.set()

    async def _attempt(
        self, task: ClaimedTask, handler: Handler, context: TaskContext | None = None
    ) -> None:
        began = time.perf_counter()
        poisoned = None  # logged when made
        try:
            outcome = await self.executor.run(task, handler, context)
        except asyncio.CancelledError:
            if task.id not in self._cancelled or task.id in self._handed_back:
                raise  # shutting down: the task is handed back
            outcome = ended(task, TaskState.CANCELLED, self.clock())
        except Exception as exc:  # not the handler's own failure: that one is an outcome
            outcome = poisoned = self._poisoned(task, "run", f"running it failed: {exc!r}")
        if task.id in self._handed_back:
            return
        if task.id in self._cancelled:
            outcome = ended(task, TaskState.CANCELLED, self.clock())
        self.events.ended(task, outcome, time.perf_counter() - began)
        if outcome is not poisoned:
            # Decided here, once: the flush that records it in bulk logs nothing.
            task_log.attempt_ended(task, outcome)
        self._record(outcome)

    def _poisoned(self, task: ClaimedTask, stage: str, reason: str) -> Outcome:
        """The DEAD outcome of a task whose stored row this replica could not
        handle at `stage`; told and logged once, here."""
        task_log.poisoned(task.id, stage, reason, task=task)
        self.events.poisoned(task.id, stage, reason)
        now = self.clock()
        error = TaskError(
            type=POISON_ERROR,
            message=f"the stored task could not be handled ({stage}): {reason}",
            attempt=task.attempts,
            failed_at=now,
        )
        return ended(task, TaskState.DEAD, now, error=error)

    def _record(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    def _finished(self, task_id: str) -> None:
        self._running.pop(task_id, None)
        self._contexts.pop(task_id, None)
        self._cancelled.discard(task_id)
        self._slot_free.set()
        if self.settings.concurrency - len(self._running) == 1:
            # capacity came back from zero: let the dispatcher claim again
            self._wake.set()

    # -- promote --------------------------------------------------------------

    async def promote(self) -> None:
        backoff = Backoff(log)
        while True:
            self._due.clear()
            try:
                await self.store.promote_due()
                due, unschedulable = await self.store.next_due()
                buried = await self.store.bury_unschedulable() if unschedulable else []
                for task in buried:
                    task_log.poisoned(
                        task.task_id, "promote", task.reason, queue=task.queue, tenant=task.tenant
                    )
                    self.events.poisoned(task.task_id, "promote", task.reason)
            except TreadleError as exc:
                await backoff.failed("promote", exc)
                continue
            backoff.ok()
            wait = self.settings.poll_interval
            if due is not None:
                wait = max(0.0, min(wait, (due - self.clock()).total_seconds()))
            # Woken early when a task is scheduled sooner than we planned for.
            await wait_event(self._due, wait)

    # -- leases ---------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Every heartbeat interval, renew the lease of every task running here
        in one statement (and say this replica is alive). A task whose lease
        was taken meanwhile (the database was out of reach for longer than a
        lease and another replica reclaimed it) is cancelled here: it runs
        elsewhere now, and its outcome would be discarded anyway. A task
        someone asked to cancel is cancelled here too, in case the NOTIFY that
        said so was missed (the LISTEN connection was down at the time)."""
        s = self.settings
        backoff = Backoff(log)
        while True:
            held = [task.lease for _, task in self._running.values()]
            try:
                kept = await self.store.heartbeat(self.owner, held, s.lease_seconds)
            except TreadleError as exc:
                await backoff.failed("heartbeat", exc)
                continue
            backoff.ok()
            self.leases_extended_total += len(kept)
            lost = [lease.task_id for lease in held if lease.task_id not in kept]
            for task_id in lost:
                entry = self._running.get(task_id)
                if entry is None:
                    continue  # it finished while we were renewing
                self.leases_lost_total += 1
                self._handed_back.add(task_id)
                self._stop_context(task_id)
                entry[0].cancel()
                log.warning("lost the lease of task %s; cancelled it here", task_id)
            for task_id, cancel_requested in kept.items():
                if cancel_requested and task_id not in self._cancelled:
                    self.cancel(task_id)
            await asyncio.sleep(s.heartbeat_interval)

    async def reap(self) -> None:
        """Take back tasks whose lease expired (their replica died), so they
        run again within about a lease plus a heartbeat of the crash."""
        s = self.settings
        backoff = Backoff(log)
        while True:
            try:
                reclaimed = await self.store.reap(s.prune_batch, s.max_reclaims)
            except TreadleError as exc:
                await backoff.failed("reaping expired leases", exc)
                continue
            backoff.ok()
            if reclaimed:
                self.reclaimed_total += len(reclaimed)
                owners = sorted({r.owner for r in reclaimed})
                dead = [r for r in reclaimed if r.state is TaskState.DEAD]
                self.events.reclaimed(reclaimed)
                task_log.reclaimed(reclaimed)
                log.warning(
                    "reclaimed %d task(s) whose lease expired (from %s)%s",
                    len(reclaimed),
                    ", ".join(owners),
                    f"; {len(dead)} lost their replica too often and are DEAD" if dead else "",
                )
                continue  # there may be more
            await asyncio.sleep(s.heartbeat_interval)

    # -- prune ----------------------------------------------------------------

    async def prune(self) -> None:
        """Delete finished tasks past retention and free expired idempotency
        keys, a batch at a time, then sleep for the prune interval."""
        s = self.settings
        backoff = Backoff(log)
        while True:
            try:
                while True:
                    now = self.clock()
                    deleted, expired = await self.store.prune(
                        now - timedelta(seconds=s.retention_seconds),
                        now - timedelta(seconds=s.idempotency_retention_seconds),
                        s.prune_batch,
                    )
                    if deleted:
                        log.info("pruned %d finished task(s)", deleted)
                    if deleted < s.prune_batch and expired < s.prune_batch:
                        break
                    await asyncio.sleep(0)  # let others use the pool between batches
                await self.store.prune_replicas(s.retention_seconds)
            except TreadleError as exc:
                await backoff.failed("prune", exc)
                continue
            backoff.ok()
            await asyncio.sleep(s.prune_interval)

    # -- flush ----------------------------------------------------------------

    async def flush(self) -> None:
        backoff = Backoff(log)
        while True:
            await self._outcome_ready.wait()
            await asyncio.sleep(self.settings.flush_interval)
            try:
                await self.flush_now()
            except TreadleError as exc:
                await backoff.failed("recording outcomes", exc)
                continue
            backoff.ok()

    async def flush_now(self) -> None:
        """Write every pending outcome in one statement."""
        self._outcome_ready.clear()
        batch, self._outcomes = self._outcomes, []
        if not batch:
            return
        began = time.perf_counter()
        try:
            try:
                applied = await self.store.complete(batch)
            except TreadleError as exc:
                if not self.store.refused(exc):
                    raise  # the database is away or busy: the whole batch again, later
                # Something in the batch the database refuses: find it.
                log.warning("recording %d outcome(s) failed (%s); one by one now", len(batch), exc)
                applied = await self._complete_each(batch)
        except BaseException:
            self._outcomes[:0] = batch
            self._outcome_ready.set()
            raise
        self.events.flushed(batch, applied, time.perf_counter() - began)
        self.completed_total += len(applied)
        if any(o.run_at is not None for o in batch):
            self._due.set()  # a retry is due at some point: let the promoter plan for it
        # By claim: an earlier claim's outcome is stale even when a later
        # claim's outcome for the same task applied in this same batch.
        stale = [o.task_id for o in batch if o.lease not in applied]
        if stale:
            self.stale_total += len(stale)
            log.warning("discarded %d outcome(s) whose lease had moved on: %s", len(stale), stale)

    async def _complete_each(self, batch: list[Outcome]) -> dict[Lease, Applied]:
        """Record `batch` an outcome at a time: one the database refuses is
        replaced by a DEAD outcome saying why (the task's row or its result
        cannot be written), so that one bad outcome never holds up the others."""
        applied: dict[Lease, Applied] = {}
        for index, outcome in enumerate(batch):
            try:
                applied.update(await self.store.complete([outcome]))
                continue
            except TreadleError as exc:
                if not self.store.refused(exc):
                    raise
                cause = exc.__cause__ or exc
                reason = f"its outcome ({outcome.state.value}) could not be recorded: {cause!r}"
            dead = Outcome(
                outcome.lease,
                outcome.attempt,
                TaskState.DEAD,
                outcome.finished_at,
                error=TaskError(
                    type=POISON_ERROR,
                    message=f"the stored task could not be handled (record): {reason}",
                    attempt=outcome.attempt,
                    failed_at=outcome.finished_at,
                ),
            )
            task_log.poisoned(outcome.task_id, "record", reason)
            self.events.poisoned(outcome.task_id, "record", reason)
            try:
                applied.update(await self.store.complete([dead]))
            except TreadleError as exc:
                if not self.store.refused(exc):
                    raise
                log.error(
                    "could not record task %s as DEAD either (%s); its lease will expire",
                    outcome.task_id,
                    exc,
                )
            batch[index] = dead
        return applied

    # -- drain ----------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Stop claiming, let running handlers finish up to `timeout` seconds,
        then cancel the rest and hand them back without charging an attempt."""
        self._claiming = False
        self._wake.set()
        self._slot_free.set()
        # A claim in flight when the stop came: its tasks start, then drain
        # like the rest (else they would run on, unseen, as the process exits).
        await wait_event(self._idle, timeout)
        runners = [runner for runner, _ in self._running.values()]
        if runners:
            log.info("draining %d running task(s), up to %.1fs", len(runners), timeout)
            all_done = asyncio.ensure_future(asyncio.wait(runners))
            forced = asyncio.ensure_future(self._forced.wait())
            await asyncio.wait(
                {all_done, forced}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in (all_done, forced):
                waiter.cancel()
            await asyncio.gather(all_done, forced, return_exceptions=True)
        left = [task.lease for _, task in self._running.values()]
        told = [lease.task_id for lease in left if lease.task_id in self._contexts]
        for lease in left:
            self._handed_back.add(lease.task_id)
            self._stop_context(lease.task_id)
        for runner, _ in list(self._running.values()):
            runner.cancel()
        if self._running:
            await asyncio.wait([r for r, _ in self._running.values()], timeout=1.0)
        # Sync handlers that watch their TaskContext's `cancelled` may stop now.
        await self.executor.settle(told, timeout=1.0)
        # A sync handler's thread runs on, whatever was cancelled here: its task
        # stays leased to this replica until the process has exited and the
        # lease expired, when the reaper of another replica takes it back.
        stranded = self.executor.shutdown()
        self.stranded = sorted(stranded)
        left = [lease for lease in left if lease.task_id not in stranded]
        try:
            await self.flush_now()
            released = await self.store.release(left)
        except TreadleError as exc:
            log.error("could not record the last outcomes on shutdown: %s", exc)
            released = set()
        if left:
            log.info("handed back %d task(s) without charging an attempt", len(released))
        if stranded:
            log.warning(
                "%d task(s) still run in sync handler threads, which nothing can stop: %s; "
                "not handed back: they run again elsewhere once this process has exited "
                "and their lease (%gs) expired",
                len(stranded),
                ", ".join(self.stranded),
                self.settings.lease_seconds,
            )
