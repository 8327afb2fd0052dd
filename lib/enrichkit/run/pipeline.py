"""The run: walk the input for pending records, keep a bounded pool of workers busy, commit what finishes,
stop cleanly. A library object: it installs no signal handler and never exits the process.

    Pipeline(plan, store, enricher, stop=...).run()
      PendingScan -> pool of workers (Enricher.enrich) -> results queue -> store.commit -> outcome -> store.finish

The main thread is the single writer of every job file; workers only put `RecordResult`s (and
failed attempts) on a queue. A record not yet started when the run stops is not started.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from enrichkit.commands import next_steps
from enrichkit.config.lifecycle import ModelNotes
from enrichkit.config.lifecycle import merge as merge_notes
from enrichkit.config.plan import JobMode, Plan
from enrichkit.errors import EnrichError, StageFailure
from enrichkit.logs import log
from enrichkit.run.enricher import AttemptError, Enricher, Inbox, RecordResult
from enrichkit.run.outcome import Outcome, RunEnd, decide_outcome, summary
from enrichkit.run.progress import Figures, Progress
from enrichkit.run.report import RunStats, build_report
from enrichkit.run.stopping import StopSignal
from enrichkit.store.jobstore import JobStore
from enrichkit.tables.scan import Pending, PendingScan, Position


@dataclass(frozen=True)
class PipelineResult:
    """How the pipeline ended (the public `enrichkit.RunResult` is made from it)."""

    outcome: Outcome
    report: dict[str, Any]
    abandoned: int  # records still in flight when the run left: their threads are still on the wire


class Pipeline:
    def __init__(self, plan: Plan, store: JobStore, enricher: Enricher, *, stop: StopSignal, inbox: Inbox,
                 progress: Progress | None = None, clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] = lambda line: None,
                 pace: Callable[[], dict[str, Any]] = lambda: {}) -> None:
        self.plan = plan
        self.opts = plan.options
        self.store = store
        self.cp = store.cp
        self.enricher = enricher
        self.stop = stop
        self.progress = progress or Progress(quiet=True)
        self.clock = clock
        self.say = say  # lines for the terminal (the closing line, the summary, a signal's notice)
        self.pace = pace  # the limiters' figures, for the checkpoint and the report
        self.stats = RunStats()
        self.fatal: EnrichError | None = None
        self.budget_hit = False
        # Workers append every finished record (and, through the enricher, failed attempt) to the job's inbox at
        # once, and wake the main thread; the main thread drains it.
        self._inbox = inbox.messages
        self._wake = inbox.woken
        self._open: dict[str, Position] = {}  # records handed out and not yet done -> where they start
        self._inflight = 0  # records handed to workers and not yet back
        self._from_top = False  # records are missing before the resume mark: the next run reads from the top
        self._handed = 0  # records handed to workers in this run
        self._timed = 0  # records whose stages were timed, and how long they took, for the batch size
        self._local_seconds = 0.0
        self._last_draw = 0.0
        self._run_started = clock()
        self._models_before = dict(self.cp.models)  # the job's model notes from earlier runs
        self._unsettled_before = self.cp.unsettled_usd  # requests given up at their deadline in earlier runs (USD)
        self.scan = self._make_scan()

    def _make_scan(self, *, from_top: bool = False, limit: int | None = None) -> PendingScan:
        store, cp = self.store, self.cp
        retrying = store.mode == JobMode.RETRY_FAILED
        counting = store.counts_exactly or from_top
        start = None
        if store.mode == JobMode.RESUME and not counting and cp.resume_at:
            start = (int(cp.resume_at["offset"]), int(cp.resume_at["row"]))
        failed = cp.failed_ids

        def wanted(record_id: str) -> bool:
            return (record_id in failed) == retrying

        return PendingScan(self.plan.table, self.plan.id_columns, done=cp.completed_ids.__contains__,
                           wanted=wanted, limit=self.opts.limit if limit is None else limit, count_all=counting,
                           start=start,
                           on_unreadable=store.log_unreadable)

    # --- the run ------------------------------------------------------------------------------------

    def run(self) -> PipelineResult:
        started = self.clock()
        store = self.store
        store.begin()
        workers = self.opts.max_workers
        self.say(self._start_line())
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enrich")
        self.progress.start(*self._progress_span())
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
        outcome = self._outcome()
        self.progress.close(self._figures())
        self.cp.stop_reason = outcome.reason
        self._note_models(on_the_wire=inflight > 0)
        store.finish(outcome.status, self._resume_at(), pace=self.pace())
        if store.broken is not None and self.fatal is None:
            outcome = decide_outcome(self._end(fatal=store.broken))  # the last checkpoint could not be written
        report = build_report(self.cp, self.stats, store.run, completed=store.run_completed,
                              failed=store.run_failed, exit_code=outcome.exit_code,
                              wall_seconds=self.clock() - started, message=outcome.message, pace=self.pace())
        report["this_run"]["unconfirmed"] = store.unconfirmed
        store.write_report(report)
        if store.broken is not None and outcome.exit_code == 0:
            outcome = decide_outcome(self._end(fatal=store.broken))  # the report could not be written
        self.say(outcome.message)
        if not self.opts.quiet:
            self.say(summary(report, [self.plan.paths.output, self.plan.paths.checkpoint, self.plan.paths.report,
                                      self.plan.paths.errors], next_steps(self.plan.paths, outcome, report)))
        pool.shutdown(wait=not inflight, cancel_futures=True)
        store.close()  # safe with records abandoned on the wire: workers never touch a file
        return PipelineResult(outcome, report, inflight)

    def _start_line(self) -> str:
        plan, store = self.plan, self.store
        kinds = ", ".join(f"{s.name} ({plan.stages.model_for(s, self.opts.model)})" if s.kind == "llm"
                          else f"{s.name} ({s.kind})" for s in plan.stages.stages)
        todo = self.cp.failed_count if store.mode == JobMode.RETRY_FAILED else self.cp.records_left
        mode = store.mode.label
        exact = self.cp.counts_exact or store.mode == JobMode.RETRY_FAILED
        count = f"{todo}" if exact else f"about {todo} (estimated from the file's lines)"
        if self.opts.limit is not None and self.opts.limit < todo:
            count = f"{self.opts.limit} (--limit) of {count}"
        return (f"{self.cp.job_id}: {mode}, {count} records to do, "
                f"{self.opts.max_workers} workers, {self._limits()}; stages: {kinds}")

    def _limits(self) -> str:
        """The pace each model's limiter was given (one figure when every model has the same)."""
        given = {model: ", ".join(f"{key} {figures[key]:,.0f}" for key in ("rpm", "tpm") if figures.get(key))
                 for model, figures in self.pace().items()}
        if not any(given.values()):
            return "no rpm/tpm"
        if len(set(given.values())) == 1:
            return next(iter(given.values()))
        return ", ".join(f"{model} {figures or 'no rpm/tpm'}" for model, figures in given.items())

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        """Keep at most 2 x workers records in flight, until none is left or the run leaves them."""
        source: Iterator[Pending] = iter(self.scan)
        exhausted = False
        waiting: list[Pending] = []  # read from the input, not yet handed out (the budget held them back)
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
                    self._open[item.record_id] = item.start  # open until done: the resume mark stays before it
                if not self._may_submit(self._inflight):  # only when there is a record to submit
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
            if self.enricher.budget is not None and self.enricher.budget.exhausted:
                self._budget_stop()  # a refused call's record came back pending: take no more
            self._tick()

    def _walk_again(self) -> bool:
        """A walk that began at the resume mark reached the end, all it handed out is back, yet the job's count
        says records are missing: they are before the mark (an input re-sorted with its size and mtime kept, rows
        lost to a failed write). Walk the input again from the top in this run, counting, rather than end with
        records left (which the next run would have to find)."""
        scan, store, cp = self.scan, self.store, self.cp
        if (scan.started_at == (0, 0) or store.mode == JobMode.RETRY_FAILED or self.stop() or scan.limit_hit
                or self.fatal is not None or cp.total_records <= store.done_count() + cp.failed_count):
            return False
        limit = self.opts.limit
        if limit is not None and self._handed >= limit:
            return False
        log.info("records are missing before the resume mark of %s (re-sorted?); reading it again from the top",
                 self.plan.table.path)
        self._from_top = True  # a crash meanwhile: the next run reads from the top too
        self._note_models()
        store.save(self._resume_at(), pace=self.pace())  # every row written so far is claimed: none is redone
        self.scan = self._make_scan(from_top=True, limit=None if limit is None else limit - self._handed)
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
                if commit:  # a failed attempt is booked here, once: the job's (store) and this run's figures
                    self.store.log_error(message)
                    self.stats.add_attempt_error(message.stage, message.error_type)
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
            if self.stop():
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
        self.stats.add(r.stage_latency, r.skipped_stages, r.failed_stage,
                       r.failure.error_type if r.failure else None)
        if r.values is not None or r.failure is not None:
            self._open.pop(r.record_id, None)
        elif r.fatal is not None and self.fatal is None:
            self._fatal(r.fatal)

    def _fatal(self, exc: EnrichError) -> None:
        if self.fatal is not None:
            return
        self.fatal = exc
        self.stop.request("fatal")
        # The key, the quota, the disk or the API is gone: in-flight records stop calling and come back.
        self.stop.abandon()
        log.error("%s", exc)

    def _may_submit(self, inflight: int) -> bool:
        """--max-cost: each paid call reserves its worst case before it goes (`enrichkit.pace.budget`), so records may
        be handed out freely; once a call's worst case did not fit what is left, none is."""
        budget = self.enricher.budget
        if budget is None or not budget.exhausted:
            return True
        self._budget_stop()
        return False

    def _budget_stop(self) -> None:
        if not self.budget_hit:
            self.budget_hit = True
            self.stop.request("budget")

    # --- bookkeeping --------------------------------------------------------------------------------

    def _announce(self) -> None:
        line = self.stop.take_announcement()
        if line:
            self.progress.clear()
            self.say(line)

    def _tick(self) -> None:
        if self.store.save_due():
            self._note_models()
            self.store.save(self._resume_at(), pace=self.pace())
        now = self.clock()
        if now - self._last_draw >= 0.2:
            self._last_draw = now
            self.progress.update(self._figures())

    def _note_models(self, *, on_the_wire: bool = False) -> None:
        """What the answers said of the models (served by another, unpriced, deprecated) into the checkpoint; and
        what the requests given up at their deadline, or left `on_the_wire` as the run leaves, may have cost (Google
        may answer and bill them all the same): --max-cost counts it in later runs."""
        budget = self.enricher.budget
        if budget is not None:
            left = budget.reserved if on_the_wire else 0.0
            self.cp.unsettled_usd = self._unsettled_before + budget.given_up + left
        notes = getattr(self.enricher.providers.get("llm"), "notes", None)
        if isinstance(notes, ModelNotes):
            self.store.note_models(merge_notes(self._models_before, notes.snapshot()))

    def _resume_at(self) -> dict[str, int] | None:
        """Where a resume may start reading: before the first record still open, else after the last row read."""
        if self.store.mode == JobMode.RETRY_FAILED:
            return None  # this run did not walk for pending records: the old mark stands
        if self._from_top:
            return {"offset": 0, "row": 0}
        offset, row = min(self._open.values()) if self._open else self.scan.position
        return {"offset": offset, "row": row}

    def _progress_span(self) -> tuple[int, int]:
        if self.store.mode == JobMode.RETRY_FAILED:
            return self.cp.failed_count, 0
        return self.cp.total_records, self.cp.completed_count + self.cp.failed_count

    def _figures(self) -> Figures:
        total, _ = self._progress_span()
        store = self.store
        run_minutes = max(1e-9, (self.clock() - self._run_started) / 60)
        if store.mode == JobMode.RETRY_FAILED:
            done = store.run_completed + store.run_failed
            failed = store.run_failed
        else:
            done = store.done_count() + self.cp.failed_count
            failed = self.cp.failed_count
        return Figures(done=done, total=max(total, done), failed=failed, tokens=self.cp.totals.total_tokens,
                       cost=self.cp.totals.cost_usd,
                       rate_per_min=(store.run_completed + store.run_failed) / run_minutes,
                       rate_limited=max(store.run.rate_limited, self._live_rate_limited()),
                       retries=store.run.retries)

    def _live_rate_limited(self) -> int:
        """429s this run so far, as the limiters count them: also those of records still retrying."""
        return sum(int(figures.get("rate_limited") or 0) for figures in self.pace().values())  # limiters are per run

    def _end(self, *, fatal: EnrichError | None = None) -> RunEnd:
        cp, store, budget = self.cp, self.store, self.enricher.budget
        done = store.done_count()
        if budget is not None and budget.exhausted:
            self.budget_hit = True
        unsettled = self._unsettled_before + (budget.given_up if budget is not None else 0.0)
        return RunEnd(done=done, failed=cp.failed_count, left=max(0, cp.total_records - done - cp.failed_count),
                      cost=cp.totals.cost_usd, unsettled=unsettled, fatal=fatal or self.fatal,
                      budget_hit=self.budget_hit,
                      stopped=self.stop(), limit_hit=self.scan.limit_hit, limit=self.opts.limit,
                      max_cost=self.opts.max_cost, next_call=budget.refused_at if budget is not None else 0.0,
                      errors_path=self.plan.paths.errors,
                      input_changed=str(self.plan.table.path) if self._input_changed() else "")

    def _input_changed(self) -> bool:
        """Did another program rewrite the input while this run read it? Its counts would then be of a file
        that no longer exists: the job is not called done, and the next run reads it afresh."""
        table = self.plan.table
        try:
            st = table.path.stat()
        except OSError:
            return True
        return (st.st_size, st.st_mtime) != (table.size, table.mtime)

    def _outcome(self) -> Outcome:
        cp, scan = self.cp, self.scan
        if self._input_changed():
            self.store.counts_unknown()  # the next run compares the input with the checkpoint's, and recounts
            return decide_outcome(self._end())
        if scan.complete:
            self.store.counted(scan.counts)
            self._from_top = False  # the whole input was read: nothing is missing before any mark
        elif scan.exhausted and self.store.mode != JobMode.RETRY_FAILED and not self.stop() and not scan.limit_hit:
            # Every readable record after the walk's start was met, so nothing is left after it.
            self.store.at_least(self.store.done_count() + cp.failed_count)
            if scan.started_at != (0, 0) and cp.total_records > self.store.done_count() + cp.failed_count:
                # Yet records are missing: they must be before the mark (their rows lost to a failed write, say).
                # The next run reads the input from the top.
                self._from_top = True
        return decide_outcome(self._end())
