"""The run's schedule: walk the input for pending records, keep a bounded pool of workers busy, hand what finishes
to the store, stop cleanly. A library object: it installs no signal handler and never exits the process.

    Pipeline(plan, store, enricher, stop=...).run()
      PendingScan -> pool of workers (Enricher.enrich) -> inbox -> store.commit -> verdict -> store.finish

The main thread is the single writer of every job file; workers only put `RecordResult`s (and failed attempts) in
the inbox. A record not yet started when the run stops is not started. Where the walk starts and what the resume
mark says is `store.mark`'s (`enrichkit.store.resumemark`); the start line, the figures, the budget gate and the
end of the run (verdict, report, closing lines) are their own modules.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from enrichkit.config.plan import JobMode, Plan
from enrichkit.errors import EnrichError, StageFailure
from enrichkit.logs import log
from enrichkit.run.budgetgate import BudgetGate
from enrichkit.run.closing import end_facts, say_closing, walk_ended
from enrichkit.run.enricher import AttemptError, Enricher, Inbox, RecordResult
from enrichkit.run.figures import current_figures, progress_span
from enrichkit.run.outcome import EndedRun, Verdict, decide_verdict
from enrichkit.run.progress import Figures, Progress
from enrichkit.run.report import build_report
from enrichkit.run.startline import start_line
from enrichkit.run.stopping import StopSignal
from enrichkit.store.jobstore import JobStore
from enrichkit.store.resumemark import Walk
from enrichkit.tables.scan import Pending, PendingScan


class Pipeline:
    def __init__(self, plan: Plan, store: JobStore, enricher: Enricher, *, stop: StopSignal, inbox: Inbox,
                 progress: Progress | None = None, clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] = lambda line: None,
                 pace: Callable[[], dict[str, Any]] = lambda: {}) -> None:
        self.plan = plan
        self.opts = plan.options
        self.store = store
        self.enricher = enricher
        self.stop = stop
        self.progress = progress or Progress(quiet=True)
        self.clock = clock
        self.say = say  # lines for the terminal (the closing line, the summary, a signal's notice)
        self.pace = pace  # the limiters' figures, for the checkpoint and the report
        self.gate = BudgetGate(enricher.budget, stop)
        self.fatal: EnrichError | None = None
        # Workers append every finished record (and, through the enricher, failed attempt) to the job's inbox at
        # once, and wake the main thread; the main thread drains it.
        self._inbox = inbox.messages
        self._wake = inbox.woken
        self._inflight = 0  # records handed to workers and not yet back
        self._handed = 0  # records handed to workers in this run
        self._timed = 0  # records whose stages were timed, and how long they took, for the batch size
        self._local_seconds = 0.0
        self._last_draw = 0.0
        self._run_started = clock()
        self.scan = self._make_scan(store.mark.walk())

    def _make_scan(self, walk: Walk, *, limit: int | None = None) -> PendingScan:
        retrying = self.store.mode == JobMode.RETRY_FAILED
        failed = self.store.cp.failed_ids

        def wanted(record_id: str) -> bool:
            return (record_id in failed) == retrying

        return PendingScan(self.plan.table, self.plan.id_columns, done=self.store.cp.completed_ids.__contains__,
                           wanted=wanted, limit=self.opts.limit if limit is None else limit,
                           count_input=walk.count_input, start=walk.start, on_unreadable=self.store.log_unreadable)

    # --- the run ------------------------------------------------------------------------------------

    def run(self) -> EndedRun:
        started = self.clock()
        store = self.store
        store.begin()
        self.say(start_line(self.plan, store, self.pace()))
        pool = ThreadPoolExecutor(max_workers=self.opts.max_workers, thread_name_prefix="enrich")
        self.progress.start(*progress_span(store))
        try:
            self._loop(pool)
        except EnrichError as exc:  # a write failed (a full disk), the input went bad mid-walk, another job's
            self._fatal(exc)       # checkpoint...: nothing more is written; the workers give up
            self._wait_for_workers()
        except BaseException:
            self.stop.abandon()  # a bug: the workers give up at their next call, so nothing more is paid for
            pool.shutdown(wait=False, cancel_futures=True)
            store.close()
            raise
        inflight = self._inflight
        walk_ended(self.plan, store, self.scan, stopped=self.stop())
        verdict = self._verdict()
        self.progress.close(self._figures())
        self._note_models(on_the_wire=inflight > 0)
        store.finish(verdict.status, self.scan.position, reason=verdict.reason, pace=self.pace())
        if store.broken is not None and self.fatal is None:
            verdict = self._verdict(store.broken)  # the last checkpoint could not be written
        report = build_report(store.cp, store.run, exit_code=verdict.exit_code, wall_seconds=self.clock() - started,
                              message=verdict.message, pace=self.pace())
        report["this_run"]["unconfirmed"] = store.unconfirmed
        store.write_report(report)
        if store.broken is not None and verdict.exit_code == 0:
            verdict = self._verdict(store.broken)  # the report could not be written
        ended = EndedRun(verdict, report, inflight)
        say_closing(self.plan, ended, self.say)
        pool.shutdown(wait=not inflight, cancel_futures=True)
        store.close()  # safe with records abandoned on the wire: workers never touch a file
        return ended

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        """Keep at most 2 x workers records in flight, until none is left or the run leaves them."""
        source: Iterator[Pending] = iter(self.scan)
        exhausted = False
        waiting: list[Pending] = []  # read from the input, not yet handed out (the budget held them back)
        mark = self.store.mark
        while True:
            batch = self._batch()
            bound = self.opts.max_workers * 2 * batch
            while self._inflight < bound and not self.stop() and (waiting or not exhausted):
                items, waiting = waiting or list(itertools.islice(source, batch)), []
                if len(items) < batch:
                    exhausted = True
                if not items:
                    break
                for item in items:
                    mark.opened(item.record_id, item.start)  # open until done: the resume mark stays before it
                if not self.gate.open():  # only when there is a record to submit
                    waiting = items
                    break
                pool.submit(self._work, items)
                self._inflight += len(items)
                self._handed += len(items)
            self._announce()
            if self._inflight == 0:
                if exhausted and not waiting and self._walk_again():
                    source, exhausted = iter(self.scan), False
                    continue
                return
            if self.stop.leaving():
                self._collect(block=False)  # what finished before the deadline is written
                return
            self._collect(block=True)
            self.gate.check()
            self._tick()

    def _walk_again(self) -> bool:
        """A walk ended with everything handed out back: walk the input again from the top, in this run, when the
        resume mark says records are missing before it (rather than end with records left for the next run)."""
        store, cp, limit = self.store, self.store.cp, self.opts.limit
        cut_short = (self.stop() or self.scan.limit_hit or self.fatal is not None
                     or (limit is not None and self._handed >= limit))
        walk = store.mark.walk_again(cut_short=cut_short,
                                     missing=cp.total_records > store.done_count() + cp.failed_count)
        if walk is None:
            return False
        log.info("records are missing before the resume mark of %s (re-sorted?); reading it again from the top",
                 self.plan.table.path)
        self._note_models()
        store.save(self.scan.position, pace=self.pace())  # every row written so far is claimed: none is redone
        self.scan = self._make_scan(walk, limit=None if limit is None else limit - self._handed)
        return True

    def _batch(self) -> int:
        """Records handed to a worker at once. One, unless every stage is a fast local function (a python-only
        job under ~2 ms a record is CPU-bound: batches of 32 make the hand-over cheap); the first records go one
        by one, timed, so a slow function still gets every worker."""
        if self.plan.remote or self._timed < 2 * self.opts.max_workers:
            return 1
        return 32 if self._local_seconds / self._timed < 0.002 else 1

    def _collect(self, *, block: bool, commit: bool = True) -> None:
        """Commit what the workers sent (`commit=False`: only count it back, after a write failed)."""
        if block:
            self._wake.wait(0.2)
        self._wake.clear()
        inbox = self._inbox
        if not inbox:
            return
        while inbox:
            message = inbox.popleft()
            if isinstance(message, AttemptError):
                if commit:  # a failed attempt is booked here, once: the store books the job's and the run's
                    self.store.log_error(message)
            else:
                self._inflight -= len(message)
                for result in message:
                    if commit:
                        self._handle(result)
                    else:
                        self.store.count_only(result)  # not written, but paid for
        if commit:
            self.store.flush()  # the rows above share one flush, before anything else happens

    def _wait_for_workers(self) -> None:
        """After a fatal error outside a record: write nothing more; give the workers a moment to give up."""
        deadline = self.clock() + 2.0
        while self._inflight > 0 and self.clock() < deadline:
            self._collect(block=True, commit=False)

    def _work(self, items: list[Pending]) -> None:
        """On a worker: each record through its stages, handed back as soon as it is finished (a slow record
        later in a batch never holds back, or at the drain deadline throws away, those before it). A record
        not started before a stop is not started."""
        stages = self.plan.stages.stages
        inbox = self._inbox
        woken = self.clock()
        for item in items:
            if self.stop.stopping:
                inbox.append([RecordResult(item.record_id, item.record.row, item.start, abandoned=True)])
                continue
            try:
                result = self.enricher.enrich(item.record, item.record_id, stages, item.start)
            except BaseException as exc:  # noqa: BLE001 - the main loop must always hear back
                # A bug of enrichkit's: the record fails (exit 1, visible to cron), it is never silently pending.
                result = RecordResult(item.record_id, item.record.row, item.start,
                                      failure=StageFailure("client_error", f"internal error: {exc!r}"))
                log.error("internal error on row %d: %r (a bug: please report it)", item.record.row, exc)
            inbox.append([result])
            if len(items) == 1 or self.clock() - woken > 0.05:
                self._wake.set()
                woken = self.clock()
        self._wake.set()

    def _handle(self, r: RecordResult) -> None:
        self.store.commit(r)
        if r.stage_latency:
            self._timed += 1
            self._local_seconds += sum(seconds for _, seconds in r.stage_latency)
        if r.values is None and r.failure is None and r.fatal is not None and self.fatal is None:
            self._fatal(r.fatal)

    def _fatal(self, exc: EnrichError) -> None:
        if self.fatal is not None:
            return
        self.fatal = exc
        self.stop.request("fatal")
        # The key, the quota, the disk or the API is gone: in-flight records stop calling and come back.
        self.stop.abandon()
        log.error("%s", exc)

    # --- bookkeeping --------------------------------------------------------------------------------

    def _announce(self) -> None:
        line = self.stop.take_announcement()
        if line:
            self.progress.clear()
            self.say(line)

    def _tick(self) -> None:
        if self.store.save_due():
            self._note_models()
            self.store.save(self.scan.position, pace=self.pace())
        now = self.clock()
        if now - self._last_draw >= 0.2:
            self._last_draw = now
            self.progress.update(self._figures())

    def _note_models(self, *, on_the_wire: bool = False) -> None:
        """What the answers said of the models (served by another, unpriced, deprecated) into the checkpoint; and
        what the requests given up at their deadline, or left `on_the_wire` as the run leaves, may have cost."""
        budget = self.enricher.budget
        if budget is not None:
            self.store.note_unsettled(budget.given_up + (budget.reserved if on_the_wire else 0.0))
        llm = self.enricher.providers.get("llm")
        if llm is not None and llm.notes is not None:
            notes = llm.notes
            self.store.note_models(notes.snapshot())

    def _figures(self) -> Figures:
        return current_figures(self.store, minutes=(self.clock() - self._run_started) / 60, pace=self.pace())

    def _verdict(self, fatal: EnrichError | None = None) -> Verdict:
        return decide_verdict(end_facts(self.plan, self.store, self.enricher.budget, fatal=fatal or self.fatal,
                                        budget_hit=self.gate.settled(), stopped=self.stop(),
                                        limit_hit=self.scan.limit_hit))
