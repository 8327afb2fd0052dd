"""A batch run: each LLM stage's requests through the Gemini Batch API, the rest of a record's stages locally.

    loop:  settle   chunks a crash left half-done (planning, planned, uploaded, creating: found by display name)
           poll     each submitted chunk's Google job; an ended one is downloaded and ingested (matched by key)
           sweep    each pending record through its stages: a batched stage's answer from the ledger (or a
                    request queued for the next chunk), python/http stages locally; a record whose stages are all
                    done goes to the output through the job store (once: the output is the truth)
           submit   queued requests -> chunks -> request file -> upload -> create (each step in the ledger first)
    until nothing is queued or in flight; --batch-detach leaves with exit 5 while Google jobs run; a stop (Ctrl+C)
    leaves them running, and says so.

Crash points (`crash_at(name)`, which the CLI turns into `os._exit` when ENRICHKIT_BATCH_CRASH_AT names one):
    planned        the chunk's items are in the ledger, nothing uploaded
    uploaded       the file is at Google, its name not recorded
    upload_recorded   the file name is recorded, no create intent yet
    creating       the create intent is committed, the create not sent
    created        Google made the job, its name not recorded (the lost-answer case)
    submitted      the job name is recorded
    downloaded     the output file is read, nothing ingested
    ingested       the answers are in the ledger, no record written
    written        records are written to the output, the checkpoint not saved
    cancelling     the cancel intent is committed, the cancel not sent
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from enrichkit.batch.collect import Collecting
from enrichkit.batch.google import BatchClient
from enrichkit.batch.ledger import IN_FLIGHT, Chunk, Ledger
from enrichkit.batch.parts import BatchSettings
from enrichkit.batch.submit import Submitting
from enrichkit.batch.sweep import Sweeping
from enrichkit.config.plan import Plan
from enrichkit.errors import Abandoned, EnrichError
from enrichkit.logs import log
from enrichkit.pace.retry import interruptible_sleep
from enrichkit.providers.base import Request
from enrichkit.run.enricher import AttemptError
from enrichkit.run.job import Job
from enrichkit.run.outcome import EndedRun, EndFacts, Verdict, decide_verdict, summary
from enrichkit.run.progress import Figures, Progress
from enrichkit.run.report import build_report
from enrichkit.run.stopping import StopSignal

EXIT_BATCH_RUNNING = 5


class BatchRun(Submitting, Collecting, Sweeping):
    """One run of a job in batch mode (the main thread is the single writer of the ledger and the job files):
    the loop, here, over its parts (`submit`, `collect`, `sweep`; what they share is `parts.BatchState`)."""

    def __init__(self, plan: Plan, job: Job, ledger: Ledger, client: BatchClient, settings: BatchSettings, *,
                 stop: StopSignal, progress: Progress | None = None, say: Callable[[str], None] = lambda line: None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep) -> None:
        self.plan, self.job, self.ledger, self.client, self.settings = plan, job, ledger, client, settings
        self.store, self.cp, self.opts = job.store, job.store.cp, plan.options
        self.stop, self.say, self.clock, self.sleep = stop, say, clock, sleep
        self.progress = progress or Progress(quiet=True)
        self.llm: Any = job.providers.get("llm")
        self.fatal: EnrichError | None = None
        self.budget_hit = False
        self._seen: dict[int, tuple[str, float]] = {}  # chunk -> (the Google state last said, when)
        self._dirty = True  # something changed that the next sweep must look at
        self._full = True  # the next sweep looks at every pending record (else only at those in `_touched`)
        self._touched: set[str] = set()  # records whose lines came back (or were given up) since the last sweep
        self._swept_once = False
        self._shapes: dict[str, Request] = {}
        self._quota_full = False
        self._local = any(not self._batched(s) for s in plan.stages.stages)  # stages run here, in the pool
        self._local_errors: deque[AttemptError] = deque()  # failed attempts of local stages, for the error log
        job.enricher.on_attempt_error = self._local_errors.append
        # --max-cost counts the job's whole cost: the checkpoint's (synchronous runs, written records) and this
        # run's synchronous calls (the enricher's budget), plus the ledger's answers not yet in the checkpoint's.
        cp_ids = self.cp.completed_ids
        failed = self.cp.failed_ids
        self._ledger_counted = (ledger.spent_on(lambda rid: rid in cp_ids or rid in failed)
                                if self.opts.max_cost is not None else 0.0)
        self._started = clock()
        self._wall_started = time.time()

    # --- the run --------------------------------------------------------------------------------------

    def run(self) -> EndedRun:
        started = self.clock()
        store = self.store
        store.begin()
        self.ledger.set_meta("job_id", self.cp.job_id)
        self.say(f"{self.cp.job_id}: batch mode, {self.cp.records_left} records to do; stages: "
                 + ", ".join(f"{s.name} ({'batch' if self._batched(s) else s.kind})" for s in self.plan.stages.stages))
        self.progress.start(self.cp.total_records, self.cp.completed_count + self.cp.failed_count)
        leaving = ""
        try:
            if self.settings.cancel:
                self._cancel_all()
                leaving = "cancelled"
            else:
                leaving = self._loop()
        except EnrichError as exc:
            self._fail(exc)
        except Abandoned:
            leaving = "stopped"
        outcome = self._outcome(leaving)
        batch = self.ledger.summary()
        store.note_batch(batch)
        self.progress.close(self._figures())
        store.finish(outcome.status, None, reason=outcome.reason)
        report = build_report(self.cp, store.run, exit_code=outcome.exit_code, wall_seconds=self.clock() - started,
                              message=outcome.message, pace={})
        report["batch"] = batch
        store.write_report(report)
        self.say(outcome.message)
        if not self.opts.quiet:
            paths = self.plan.paths
            self.say(summary(report, [paths.output, paths.checkpoint, paths.report, paths.errors, self.ledger.path]))
            c = batch["cost"]
            self.say(f"  batch: {batch['jobs_total']} Google job(s); answers ${c['tokens_usd']:.4f} tokens + "
                     f"${c['grounding_usd']:.4f} grounding at the batch rate; the same tokens at the standard rate "
                     f"${c['tokens_at_standard_usd']:.4f} (saved ${c['saved_usd']:.4f})")
        store.close()
        return EndedRun(outcome, report, 0)

    def _loop(self) -> str:
        while True:
            self._settle()
            self._poll()
            if self._dirty:
                self._dirty = False
                work = self._sweep()
                self._submit(work.queued)
                self._save()
            flying = self.ledger.chunks(*IN_FLIGHT)
            if self.budget_hit and not flying:
                return "budget"
            if not flying and not self._dirty:
                return "done"
            if self.stop():
                return "stopped"
            if self.settings.detach and flying and not self._dirty:
                return "detached"
            if flying:
                interruptible_sleep(self._poll_wait(flying), self.sleep, self.stop)

    def _poll_wait(self, flying: list[Chunk]) -> float:
        """--batch-poll, backing off (up to 10x) while the youngest job in flight is old: Google takes hours."""
        now = time.time()
        youngest = min((now - (c.submitted_at or c.changed_at) for c in flying), default=0.0)
        base = self.settings.poll
        return base * min(10.0, max(1.0, youngest / max(base * 60, 1e-9)))

    # --- settle: what a crash left half-done --------------------------------------------------------

    # --- poll and ingest ----------------------------------------------------------------------------

    # --- sweep --------------------------------------------------------------------------------------

    # --- submit -------------------------------------------------------------------------------------

    # --- cancel ---------------------------------------------------------------------------------------

    # --- helpers --------------------------------------------------------------------------------------


    def _save(self) -> None:
        self.store.note_batch(self.ledger.summary())
        self.store.save(None)
        self.progress.update(self._figures())

    def _figures(self) -> Figures:
        cp, store = self.cp, self.store
        minutes = max(1e-9, (self.clock() - self._started) / 60)
        done = store.done_count() + cp.failed_count
        return Figures(done=done, total=max(cp.total_records, done), failed=cp.failed_count,
                       tokens=cp.totals.total_tokens, cost=cp.totals.cost_usd,
                       rate_per_min=(store.run.completed + store.run.failed) / minutes)

    def _fail(self, exc: EnrichError) -> None:
        if self.fatal is None:
            self.fatal = exc
            log.error("%s", exc)

    def _outcome(self, leaving: str) -> Verdict:
        cp, store = self.cp, self.store
        flying = self.ledger.chunks(*IN_FLIGHT)
        held = sum(c.lines for c in flying)
        done = store.done_count()
        left = max(0, cp.total_records - done - cp.failed_count)
        if self.fatal is not None:
            return decide_verdict(self._end(done, left, fatal=self.fatal))
        if leaving == "cancelled":
            # Exit 0 only when every record is done (a cron line is removed on it); records left are pending.
            return Verdict("interrupted" if left else "completed", 1 if left else 0,
                           f"{done} done, {left} left; no Google batch job of this job is running. "
                           "Run with --resume to continue.")
        if flying and leaving == "detached":
            return Verdict("waiting", EXIT_BATCH_RUNNING,
                           f"Waiting for Google: {len(flying)} batch job(s) running with {held} requests; {done} "
                           f"done, {left} left. Run again (--resume) to collect them.")
        if flying:
            return Verdict("waiting", 130,
                           f"Interrupted: {done} done, {left} left; {len(flying)} Google batch job(s) keep running "
                           f"({held} requests, billed when they finish). Run with --resume to collect them, or "
                           "--cancel-batches to cancel them.")
        if leaving == "budget":
            return decide_verdict(self._end(done, left, budget=True))
        return decide_verdict(self._end(done, left, stopped=leaving == "stopped"))

    def _end(self, done: int, left: int, *, fatal: EnrichError | None = None, budget: bool = False,
             stopped: bool = False) -> EndFacts:
        cost = self.cp.totals.cost_usd
        return EndFacts(done=done, failed=self.cp.failed_count, left=left, cost=cost, fatal=fatal, budget_hit=budget,
                      stopped=stopped, limit_hit=self.opts.limit is not None, limit=self.opts.limit,
                      max_cost=self.opts.max_cost, errors_path=self.plan.paths.errors)



