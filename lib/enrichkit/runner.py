"""The run: stream pending records to a bounded pool of workers, write what finishes, stop cleanly.

The main thread is the single writer of the output, the checkpoint and the counters; workers
only return `RecordResult`s through a queue. Signals only set flags (`StopSignal`) that the main
loop reads, so no handler ever runs in the middle of a write.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from enrichkit.breaker import CircuitBreaker
from enrichkit.cache import ResponseCache
from enrichkit.checkpoint import write_checkpoint
from enrichkit.errorlog import ErrorLog
from enrichkit.errors import EnrichError
from enrichkit.idset import IdSet
from enrichkit.job import Job
from enrichkit.limiter import Limiter
from enrichkit.logs import log
from enrichkit.outcome import Outcome, RunEnd, decide_outcome, records_left, summary
from enrichkit.output import OutputWriter, tail_digest
from enrichkit.pricing import load_pricing
from enrichkit.progress import Figures, Progress
from enrichkit.records import BadRow, Record, RecordIds
from enrichkit.report import RunStats, build_report, write_report
from enrichkit.retry import RetryPolicy
from enrichkit.stopping import StopSignal
from enrichkit.worker import Enricher, RecordResult

# First backoff step in seconds (then doubling, full jitter, capped at 60 s); tests shorten it.
BACKOFF_BASE = float(os.environ.get("ENRICHKIT_BACKOFF_BASE", "1"))


class Runner:
    def __init__(self, job: Job, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.job = job
        self.cp = job.checkpoint
        self.opts = job.options
        self.clock = clock
        self.stop = StopSignal(clock)
        self.stats = RunStats(fields=job.stages.output_fields)
        self.results: queue.SimpleQueue[list[RecordResult]] = queue.SimpleQueue()
        self.fatal: EnrichError | None = None
        self.limit_hit = False
        self.exhausted = False
        self.budget_hit = False
        self.counted = False  # the pass counted records, duplicates and bad rows exactly
        self._max_record_cost = 0.0
        self._open: dict[str, tuple[int, int]] = {}  # records handed out and not yet done -> where they start
        self._scanned: tuple[int, int] | None = None  # (byte offset, row) after the last input row read
        self._since_save = 0
        self._last_save = clock()
        self._save_cost = 0.0
        self._elapsed_mark = clock()
        self._last_draw = 0.0
        self._run_started = clock()

    # --- set-up -------------------------------------------------------------------------------

    def _build(self) -> None:
        job, opts = self.job, self.opts
        kinds = {s.kind for s in job.stages.stages}
        self.errorlog = ErrorLog(job.paths.errors)
        # Python stages are cheap and local: only LLM and HTTP answers are worth caching.
        self.cache = None if opts.no_cache or not kinds & {"llm", "http"} else ResponseCache(job.paths.cache)
        gemini = http = limiter = breaker = None
        if "llm" in kinds:
            from enrichkit.providers.gemini import GeminiProvider

            assert job.api_key is not None
            base_url = opts.base_url or os.environ.get("GEMINI_BASE_URL") or None
            gemini = GeminiProvider(api_key=job.api_key, base_url=base_url, timeout=opts.timeout)
            defaults = job.stages.defaults
            limiter = Limiter(opts.rpm if opts.rpm is not None else defaults.get("rpm"),
                              opts.tpm if opts.tpm is not None else defaults.get("tpm"))
        if "http" in kinds:
            from enrichkit.providers.http import HttpProvider

            http = HttpProvider(timeout=opts.timeout)
        if kinds & {"llm", "http"}:
            breaker = CircuitBreaker(max_outage=opts.max_outage)
        self.gemini = gemini
        # Python-only jobs are CPU-bound: hand records to workers in batches so the hand-over costs little.
        # Anything that waits on the network goes one record at a time, so every answer is written at once.
        self.batch_size = 1 if kinds & {"llm", "http"} else 32
        self.enricher = Enricher(
            stages=job.stages, policy=RetryPolicy(max_retries=opts.max_retries, base=BACKOFF_BASE),
            errorlog=self.errorlog,
            pricing=load_pricing(), should_stop=self.stop.abandoning, gemini=gemini, http=http, functions=job.functions,
            cache=self.cache, limiter=limiter, breaker=breaker, model=opts.model, delay=opts.delay)
        self.writer = OutputWriter(job.paths.output, job.columns, job.stages.output_fields, self.cp.job_id)
        self.progress = Progress(quiet=opts.quiet)

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> int:
        started = self.clock()
        # From here to the end a signal only sets a flag, so every write (rows, checkpoint, report) stays whole.
        previous = {s: signal.signal(s, self.stop.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._build()
            self.cp.status = "running"
            self.cp.runs += 1
            self._save()
            pool = ThreadPoolExecutor(max_workers=self.opts.max_workers, thread_name_prefix="enrich")
            self.progress.start(*self._progress_span())
            inflight = self._loop(pool)
            outcome = self._outcome()
            self.progress.close()
            self._finish(outcome, self.clock() - started)
            if inflight:
                # Abandoned records are still on the wire. Everything durable is written; make sure no
                # worker is mid-line in the error log, then leave without joining their threads.
                self.errorlog.lock.acquire()
                sys.stderr.flush()
                sys.stdout.flush()
                os._exit(outcome.exit_code)
            pool.shutdown(wait=True)
            self._close()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return outcome.exit_code

    def _loop(self, pool: ThreadPoolExecutor) -> int:
        """Keep at most 2 x workers tasks in flight; return how many records were abandoned."""
        batch = self.batch_size
        bound = self.opts.max_workers * 2 * batch
        source = self._pending()
        inflight = 0
        while True:
            while inflight < bound and not self.stop() and not self.exhausted:
                if not self._may_submit(inflight):
                    break
                items = list(itertools.islice(source, batch))
                if len(items) < batch:
                    self.exhausted = True
                if not items:
                    break
                pool.submit(self._work, items)
                inflight += len(items)
            if inflight == 0:
                return 0
            if self.stop.leaving():
                return inflight
            try:
                results = self.results.get(timeout=0.2)
            except queue.Empty:
                self._tick()
                continue
            while True:
                for result in results:
                    self._handle(result)
                inflight -= len(results)
                try:
                    results = self.results.get_nowait()
                except queue.Empty:
                    break
            self.writer.flush()  # the rows handled above share one flush, before anything else happens
            self._tick()

    def _work(self, items: list[tuple[Record, str]]) -> None:
        results = []
        for record, record_id in items:
            try:
                results.append(self.enricher.enrich(record, record_id))
            except BaseException as exc:  # noqa: BLE001 - the main loop must always hear back
                results.append(RecordResult(record_id, record.row, abandoned=True))
                log.error("internal error on row %d: %r", record.row, exc)
        self.results.put(results)

    def _pending(self) -> Iterator[tuple[Record, str]]:
        """Records still to do, in file order, each ID once. Reads the input lazily.

        When the counts are not known (a new job, a changed input) the pass counts unique records,
        duplicates and bad rows, reading on to the end after a --limit so the figures are exact.
        A resume of an unchanged input starts after the checkpoint's `resume_at`, the end of the
        longest stretch of rows that were all done (or failed, duplicates, unreadable) at the time.
        """
        cp, job = self.cp, self.job
        retrying = job.mode == "retry_failed"
        counting = job.counts_exactly
        log_bad = cp.runs <= 1 or job.input_changed
        ids = RecordIds(job.id_columns)
        # IDs met in this pass. A completed ID needs no entry unless counting: it is skipped anyway.
        seen = IdSet()
        unique = dupes = bad = taken = 0
        completed, failed = cp.completed_ids, cp.failed_ids
        limit = self.opts.limit
        start = None
        if job.mode == "resume" and not counting and cp.resume_at:
            start = (int(cp.resume_at["offset"]), int(cp.resume_at["row"]))
        self._scanned = start or (0, 0)
        for item in job.table.rows(start):
            here = (item.end, item.row)
            if isinstance(item, BadRow):
                bad += 1
                if log_bad:
                    self.errorlog.record(record_id=None, row=item.row, stage=None, attempt=0,
                                         error_type="input_error", message=item.message)
                self._advance(here)
                continue
            record_id = ids(item.values)
            if record_id in completed and not counting:
                self._advance(here)
                continue
            if record_id in seen:
                dupes += 1
                self._advance(here)
                continue
            seen.add(record_id)
            unique += 1
            if record_id in completed or retrying != (record_id in failed) or self.limit_hit:
                self._advance(here)
                continue
            if limit is not None and taken >= limit:
                self.limit_hit = True
                if not counting:
                    return
                continue
            taken += 1
            self._open[record_id] = self._scanned  # not done until its result is handled
            self._advance(here)
            yield item, record_id
        if counting:
            cp.total_records, cp.duplicates, cp.input_errors = unique, dupes, bad
            cp.counts_exact = self.counted = True

    def _advance(self, here: tuple[int, int]) -> None:
        # Past --limit the pass only counts: the rows it reads then are not done.
        if not self.limit_hit:
            self._scanned = here

    def _resume_at(self) -> dict[str, int] | None:
        """Where a resume may start reading: before the first record still open, else after the last row read."""
        if self.job.mode == "retry_failed" or self._scanned is None:
            return self.cp.resume_at  # this run did not scan for pending records: the old mark stands
        offset, row = min(self._open.values()) if self._open else self._scanned
        return {"offset": offset, "row": row} if offset else None

    def _handle(self, r: RecordResult) -> None:
        cp, stats = self.cp, self.stats
        for totals in (stats, cp):  # this run's figures and the job's, counted alike
            totals.requests += r.calls.requests
            totals.retries += r.calls.retries
            totals.rate_limited += r.calls.rate_limited
            totals.cache_hits += r.cache_hits
            totals.prompt_tokens += r.prompt_tokens
            totals.output_tokens += r.output_tokens
            totals.cost_usd += r.cost_usd
        cp.total_tokens += r.prompt_tokens + r.output_tokens
        self._max_record_cost = max(self._max_record_cost, r.cost_usd)
        for stage, seconds in r.stage_latency:
            stats.stages[stage].succeeded += 1
            stats.stages[stage].add_latency(seconds, stats._rng)
        for stage, error_type in r.attempt_errors:
            stats.stages[stage].attempt_errors[error_type] += 1
        cp.errors.extend(r.logged)
        if r.values is not None or r.failure is not None:
            self._open.pop(r.record_id, None)
        if r.values is not None:
            # Written here, flushed by the loop before the next checkpoint or result: then the record is done.
            self.writer.write(r.values, r.record_id, flush=False)
            cp.mark_completed(r.record_id)
            stats.add_success(r.values)
            self._since_save += 1
        elif r.failure is not None:
            cp.mark_failed(r.record_id)
            stats.failed += 1
            stats.stages[r.failed_stage or "?"].failed_records[r.failure.error_type] += 1
            self._since_save += 1
        elif r.fatal is not None and self.fatal is None:
            self.fatal = r.fatal
            self.stop.request("fatal")
            # The key, the quota or the API is gone: in-flight records stop calling, finish local work, and return.
            self.stop.abandon()
            log.error("%s", r.fatal)

    def _may_submit(self, inflight: int) -> bool:
        """--max-cost: submit only while the job's cost plus the most a record has cost so far, for each record in
        flight and the next, stays within the budget. Until one record has a cost, one record at a time."""
        limit = self.opts.max_cost
        if limit is None:
            return True
        if not self.stats.completed + self.stats.failed:
            return inflight == 0
        if self.cp.cost_usd + self._max_record_cost * (inflight + 1) > limit:
            self.budget_hit = True
            self.stop.request("budget")
            return False
        return True

    # --- bookkeeping --------------------------------------------------------------------------

    def _tick(self) -> None:
        now = self.clock()
        interval_due = self._since_save >= self.opts.checkpoint_interval
        # Coalesce in time: at least 1 s apart, and never more than ~5% of the run spent writing checkpoints.
        gap = max(1.0, 20 * self._save_cost)
        if (interval_due and now - self._last_save >= gap) or (self._since_save and now - self._last_save >= 10):
            self._save()
        if now - self._last_draw >= 0.2:
            self._last_draw = now
            self.progress.update(self._figures())

    def _save(self) -> None:
        started = self.clock()
        self.writer_sync()
        self.cp.elapsed_seconds += started - self._elapsed_mark
        self._elapsed_mark = started
        write_checkpoint(self.job.paths.checkpoint, self.cp)
        self._since_save = 0
        self._last_save = self.clock()
        self._save_cost = self._last_save - started

    def writer_sync(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.sync()  # the checkpoint must never claim rows that are not on disk
            self.cp.output_bytes = writer.size()
            self.cp.output_digest = tail_digest(writer.path, self.cp.output_bytes)
            self.cp.output_rows = self.cp.completed_count  # every completed record is one row, and only those
        self.cp.resume_at = self._resume_at()

    def _progress_span(self) -> tuple[int, int]:
        if self.job.mode == "retry_failed":
            return self.cp.failed_count, 0
        return self.cp.total_records, self.cp.completed_count + self.cp.failed_count

    def _figures(self) -> Figures:
        total, _ = self._progress_span()
        run_minutes = max(1e-9, (self.clock() - self._run_started) / 60)
        if self.job.mode == "retry_failed":
            done = self.stats.completed + self.stats.failed
            failed = self.stats.failed
        else:
            done = self.cp.completed_count + self.cp.failed_count
            failed = self.cp.failed_count
        return Figures(done=done, total=max(total, done), failed=failed, tokens=self.cp.total_tokens,
                       cost=self.cp.cost_usd, rate_per_min=(self.stats.completed + self.stats.failed) / run_minutes)

    def _outcome(self) -> Outcome:
        cp = self.cp
        if self.exhausted and not self.counted and self.job.mode != "retry_failed" and not self.stop() \
                and not self.limit_hit:
            # Every readable record was met in this pass, so nothing is left whatever total_records said.
            cp.total_records = max(cp.total_records, cp.completed_count + cp.failed_count)
        return decide_outcome(cp, RunEnd(fatal=self.fatal, budget_hit=self.budget_hit, stopped=self.stop(),
                                         limit_hit=self.limit_hit, limit=self.opts.limit,
                                         max_cost=self.opts.max_cost, errors_path=self.job.paths.errors))

    def _finish(self, outcome: Outcome, wall: float) -> None:
        cp = self.cp
        cp.status = outcome.status
        self._save()
        report = build_report(cp, self.stats, exit_code=outcome.exit_code, wall_seconds=wall,
                              pending=records_left(cp), message=outcome.message)
        write_report(self.job.paths.report, report)
        sys.stderr.write(outcome.message + "\n")  # the final line, even with --quiet
        if not self.opts.quiet:
            sys.stderr.write(summary(report, self.job.paths) + "\n")

    def _close(self) -> None:
        self.writer.close()
        self.errorlog.close()
        if self.cache is not None:
            self.cache.close()
        if self.gemini is not None:
            self.gemini.close()


def run_job(job: Job) -> int:
    """Run a prepared job to its end; the lock is released whatever happens."""
    try:
        return Runner(job).run()
    finally:
        with contextlib.suppress(Exception):
            job.lock.release()


__all__ = ["Runner", "run_job"]
