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
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enrichkit.batch.google import BatchClient, RemoteJob, read_line, request_line
from enrichkit.batch.ledger import IN_FLIGHT, Chunk, Item, Ledger, item_key
from enrichkit.classify import classify_error
from enrichkit.enricher import AttemptError, RecordResult
from enrichkit.errors import Abandoned, ConfigError, EnrichError, StageFailure
from enrichkit.job import Job
from enrichkit.logs import log
from enrichkit.outcome import Outcome, RunEnd, decide_outcome, summary
from enrichkit.pipeline import RunResult
from enrichkit.plan import Plan
from enrichkit.progress import Figures, Progress
from enrichkit.providers.base import Request, Usage
from enrichkit.records import Record
from enrichkit.report import RunStats, build_report
from enrichkit.retry import interruptible_sleep
from enrichkit.scan import PendingScan
from enrichkit.stages import Stage
from enrichkit.stopping import StopSignal

EXIT_BATCH_RUNNING = 5
GRPC_TO_HTTP = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 7: 403, 8: 429, 9: 400, 10: 409, 13: 500, 14: 503, 16: 401}
RETRY_ELSEWHERE = ("missing", "expired", "cancelled", "failed_job")  # no answer, no attempt used up
SYNC_AFTER = 2  # lines of a (stage, record) lost this often (missing, expired) go the synchronous way
PROGRESS_EVERY = 600.0  # a line per Google job at least this often while waiting
STRAY_WINDOW = 3600.0  # how long a chunk created again is watched for its first create's job


@dataclass
class BatchSettings:
    poll: float = 60.0
    detach: bool = False
    cancel: bool = False
    chunk_lines: int = 5000  # requests per Google batch job
    settle: float = 60.0  # how long a create in doubt may stay unlisted before it is taken as never made
    crash_at: Callable[[str], None] = lambda point: None


@dataclass(frozen=True)
class _Queued:
    """A request line waiting for its chunk: only its text is kept (a million Request objects would not fit)."""

    record_id: str
    attempt: int
    line: str
    estimate: float  # USD at the batch rate


@dataclass
class _Sweep:
    # (stage, model, after an expiry) -> lines; lines whose job expired go again in chunks half the size
    queued: dict[tuple[str, str, bool], list[_Queued]] = field(default_factory=dict)


@dataclass
class _Assembled:
    """What one record's walk through its stages gives the main thread (the single writer) to do."""

    result: RecordResult | None = None  # finished (written or failed); None: it waits for Google
    needs: list[tuple[Stage, int, Request, bool]] = field(default_factory=list)  # lines to queue (, smaller)
    logs: list[dict[str, Any]] = field(default_factory=list)  # error log lines


class BatchRun:
    """One run of a job in batch mode (the main thread is the single writer of the ledger and the job files)."""

    def __init__(self, plan: Plan, job: Job, ledger: Ledger, client: BatchClient, settings: BatchSettings, *,
                 stop: StopSignal, progress: Progress | None = None, say: Callable[[str], None] = lambda line: None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep) -> None:
        self.plan, self.job, self.ledger, self.client, self.settings = plan, job, ledger, client, settings
        self.store, self.cp, self.opts = job.store, job.store.cp, plan.options
        self.stop, self.say, self.clock, self.sleep = stop, say, clock, sleep
        self.progress = progress or Progress(quiet=True)
        self.llm: Any = job.providers.get("llm")
        self.stats = RunStats()
        self.fatal: EnrichError | None = None
        self.budget_hit = False
        self._seen: dict[int, tuple[str, float]] = {}  # chunk -> (the Google state last said, when)
        self._dirty = True  # something changed that the next sweep must look at
        self._full = True  # the next sweep looks at every pending record (else only at those in `_touched`)
        self._touched: set[str] = set()  # records whose lines came back (or were given up) since the last sweep
        self._swept_once = False
        self._ever_submitted = 0
        self._shapes: dict[str, Request] = {}
        self._quota_full = False
        self._local = any(not self._batched(s) for s in plan.stages.stages)  # stages run here, in the pool
        self._local_errors: deque[AttemptError] = deque()  # failed attempts of local stages, for the error log
        job.enricher.on_attempt_error = self._local_errors.append
        self._started = clock()
        self._wall_started = time.time()

    # --- the run --------------------------------------------------------------------------------------

    def run(self) -> RunResult:
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
        self.cp.batch = self.ledger.summary()
        self.progress.close(self._figures())
        store.finish(outcome.status, None)
        report = build_report(self.cp, self.stats, store.run, completed=store.run_completed, failed=store.run_failed,
                              exit_code=outcome.exit_code, wall_seconds=self.clock() - started,
                              message=outcome.message, pace={})
        report["batch"] = self.cp.batch
        store.write_report(report)
        self.say(outcome.message)
        if not self.opts.quiet:
            paths = self.plan.paths
            self.say(summary(report, [paths.output, paths.checkpoint, paths.report, paths.errors, self.ledger.path]))
            c = self.cp.batch["cost"]
            self.say(f"  batch: {self.cp.batch['jobs_total']} Google job(s); answers ${c['tokens_usd']:.4f} tokens + "
                     f"${c['grounding_usd']:.4f} grounding at the batch rate; the same tokens at the standard rate "
                     f"${c['tokens_at_standard_usd']:.4f} (saved ${c['saved_usd']:.4f})")
        store.close()
        return RunResult(outcome, report, 0)

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

    def _settle(self) -> None:
        ledger = self.ledger
        for chunk in ledger.chunks("planning"):
            ledger.drop_chunk(chunk.id)  # its file may be half-written; its records were never in flight
            self._full = True
            self._chunk_file(chunk.id).unlink(missing_ok=True)
        for chunk in ledger.chunks("planned"):
            self._upload(chunk)
        for chunk in ledger.chunks("creating"):
            self._find_or_recreate(chunk)
        self._cancel_strays()
        for chunk in ledger.chunks("uploaded"):
            if self._waiting_for_quota():
                break
            self._create(chunk)

    def _find_or_recreate(self, chunk: Chunk) -> None:
        """A create in doubt: the job may exist (its answer was lost). Find it by display name; only once the
        list had time to settle and still lacks it is it created anew (under the next display name)."""
        prefix = _display_prefix(self.cp.job_id, chunk)
        found = [job for job in self.client.jobs() if job.display_name.startswith(prefix)]
        if found:
            job = found[-1]  # the oldest (the list is newest first); there is never more than one
            self.ledger.set_chunk(chunk.id, state="submitted", batch_name=job.name, display_name=job.display_name,
                                  remote_state=job.state, submitted_at=time.time())
            log.info("batch chunk %d: found its Google job %s (%s) after a lost create answer", chunk.id, job.name,
                     job.display_name)
            return
        if time.time() - (chunk.creating_at or 0.0) < self.settings.settle:
            return  # the list may lag behind a create: ask again at the next poll
        self.ledger.set_chunk(chunk.id, state="uploaded")
        self._create(self.ledger.chunk(chunk.id))

    def _cancel_strays(self) -> None:
        """A create taken as never made (unlisted past the settle time) may still show up later, behind a slow
        list: for an hour after such a chunk was created again, any other job under its display names is
        cancelled at once (its answers are never read; while it is PENDING nothing is billed)."""
        now = time.time()
        watched = [c for c in self.ledger.chunks("submitted", "ingested")
                   if c.create_tries > 1 and now - (c.submitted_at or now) < STRAY_WINDOW]
        if not watched:
            return
        try:
            listed = list(self.client.jobs())
        except Exception as exc:  # noqa: BLE001 - looked for again at the next poll
            self._call_failed("list", exc)
            return
        for chunk in watched:
            prefix = _display_prefix(self.cp.job_id, chunk)
            for job in listed:
                if job.display_name.startswith(prefix) and job.name != chunk.batch_name and not job.ended:
                    log.warning("Google batch job %s (%s) was created by a create whose answer was lost and that "
                                "the list showed too late; the chunk has job %s: cancelling the stray", job.name,
                                job.display_name, chunk.batch_name)
                    try:
                        self.client.cancel(job.name)
                    except Exception as exc:  # noqa: BLE001 - tried again at the next poll
                        self._call_failed("cancel", exc)

    # --- poll and ingest ----------------------------------------------------------------------------

    def _poll(self) -> None:
        for chunk in self.ledger.chunks("submitted"):
            assert chunk.batch_name is not None
            try:
                job = self.client.get(chunk.batch_name)
            except Exception as exc:  # noqa: BLE001 - classified: a fatal one stops the run, others wait a poll
                self._call_failed("get", exc)
                continue
            self._show(chunk, job)
            if job.ended:
                self._collect(chunk, job)

    def _show(self, chunk: Chunk, job: RemoteJob) -> None:
        """A line per Google job state change (and every 10 min): state, % done, age, expiry, records held."""
        said = self._seen.get(chunk.id)
        now = self.clock()
        if said is not None and said[0] == job.state and now - said[1] < PROGRESS_EVERY:
            return
        self._seen[chunk.id] = (job.state, now)
        total = job.stats.get("requestCount", chunk.lines) or chunk.lines
        done = job.stats.get("successfulRequestCount", 0) + job.stats.get("failedRequestCount", 0)
        age = time.time() - (chunk.submitted_at or chunk.changed_at)
        expires = max(0.0, 48 * 3600 - age)
        log.info("Google batch job %s (%s, stage %s): %s, %d%% done (%d/%d), age %s, expires in %s; %d records in it",
                 chunk.display_name, chunk.batch_name, chunk.stage, job.state, 100 * done // max(1, total), done,
                 total, _span(age), _span(expires), chunk.lines)
        if job.state != chunk.remote_state:
            self.ledger.set_chunk(chunk.id, remote_state=job.state, stats=job.stats)

    def _collect(self, chunk: Chunk, job: RemoteJob) -> None:
        if job.state == "FAILED" and not job.output_file:
            message = str((job.error or {}).get("message") or "no reason given")
            self._ingest(chunk.id, {}, "failed", job.state, job.stats, "failed_job")
            code = int((job.error or {}).get("code") or 0)
            if code in (3, 5, 7, 9) or "not supported" in message or "INVALID_ARGUMENT" in message:
                raise ConfigError(f"Google batch job {job.name} ({chunk.display_name}, stage {chunk.stage}) failed "
                                  f"for a configuration reason: {message}")
            log.warning("Google batch job %s failed (%s): its %d records go again", job.name, message, chunk.lines)
            return
        if not job.output_file:  # expired, or cancelled before any answer
            left = "expired" if job.state == "EXPIRED" else "cancelled"
            self._ingest(chunk.id, {}, left, job.state, job.stats, left)
            log.warning("Google batch job %s %s: its %d records go again", job.name, job.state.lower(), chunk.lines)
            self._dirty = True
            return
        try:
            data = self.client.download(job.output_file)
        except Exception as exc:  # noqa: BLE001 - a download that failed is tried again at the next poll
            self._call_failed("download", exc)
            return
        self.settings.crash_at("downloaded")
        stage = next(s for s in self.plan.stages.stages if s.name == chunk.stage)
        held = {item.key: item for item in self.ledger.items_of(chunk.id) if item.state == "inflight"}
        results: dict[str, tuple[str, dict[str, Any]]] = {}
        strays = 0
        for line in data.decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            key, response, status = read_line(line)
            item = held.get(key)
            if item is None or key in results:
                strays += 1  # not ours, or a second line for one key: never billed twice on our side
                continue
            results[key] = self._read_result(stage, item, response, status)
        if strays:
            log.warning("Google batch job %s: %d output lines matched no request of it (ignored)", job.name, strays)
        left = "cancelled" if job.state == "CANCELLED" else "missing"
        missing = len(held) - len(results)
        self._ingest(chunk.id, results, "ingested", job.state, job.stats, left)
        self.settings.crash_at("ingested")
        if missing:
            log.warning("Google batch job %s: %d requests came back without an answer; they go again", job.name,
                        missing)
        self._dirty = True

    def _read_result(self, stage: Stage, item: Item, response: dict[str, Any] | None,
                     status: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """One output line as the ledger keeps it: the fields (parsed by the synchronous path's reader), or the
        classified error, with what it cost at the batch rate."""
        request = self._request(stage)
        if response is not None:
            try:
                answer = self.llm.read_answer(self.client.response(response), request, batch=True)
            except StageFailure as refused:
                usage = refused.usage if isinstance(refused.usage, Usage) else Usage()
                return "error", {"error_type": refused.error_type, "message": refused.message,
                                 "usage": self._priced(usage), "cost_usd": usage.counters().cost_usd}
            return "answered", {"fields": answer.fields, "usage": self._priced(answer.usage),
                                "cost_usd": answer.usage.counters().cost_usd}
        failure = _line_failure(status)
        return "error", {"error_type": failure.error_type, "message": failure.message}

    def _ingest(self, chunk_id: int, results: dict[str, tuple[str, dict[str, Any]]], state: str, remote: str,
                stats: dict[str, Any], left_as: str) -> None:
        """The chunk's outcome into the ledger; its records are looked at by the next sweep."""
        self.ledger.ingest(chunk_id, results, state, remote, stats, left_as)
        self._quota_full = False  # a job ended: its enqueued tokens are free again
        self._touched.update(item.record_id for item in self.ledger.items_of(chunk_id))
        self._dirty = True

    def _priced(self, usage: Usage) -> dict[str, Any]:
        """The usage as the ledger keeps it, with what its tokens would have cost at the standard rate (the
        report's saving; the grounding fee is the same either way)."""
        standard = self.plan.pricing.charge(usage.model, prompt_tokens=usage.prompt_tokens,
                                            output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens)
        return {**_usage_dict(usage), "standard_token_usd": standard.tokens}

    # --- sweep --------------------------------------------------------------------------------------

    def _sweep(self) -> _Sweep:
        """Every pending record through its stages as far as the answers at hand go."""
        store, cp = self.store, self.cp
        retrying = store.mode == "retry_failed"
        counting = store.counts_exactly and not self._swept_once
        failed = cp.failed_ids
        # After the first walk, a record is looked at again only when one of its lines came back: the others are
        # still held by Google (a million-record job is not re-read whole at every poll).
        full, touched = self._full or counting, self._touched
        # --limit N: the run takes on at most N pending records (those already in flight among them).
        scan = PendingScan(self.plan.table, self.plan.id_columns, done=cp.completed_ids.__contains__,
                           wanted=lambda rid: (rid in failed) == retrying, count_all=counting,
                           limit=self.opts.limit if full else None)
        work = _Sweep()
        wrote = 0
        self._full, self._touched = False, set()
        def wanted() -> Iterator[tuple[Record, str]]:
            for pending in scan:
                if self.stop():
                    self._dirty = self._full = True  # the rest of the walk is for the next run
                    return
                if full or pending.record_id in touched:
                    yield pending.record, pending.record_id

        def handle(done: _Assembled, record_id: str) -> None:
            nonlocal wrote
            while self._local_errors:
                store.log_error(self._local_errors.popleft())
            for line in done.logs:
                store.log_error(line)
            for stage, attempt, request, smaller in done.needs:
                self._enqueue(work, stage, record_id, attempt, request, smaller)
            result = done.result
            if result is None:
                return
            store.commit(result)
            wrote += 1
            self.stats.add(result.stage_latency, result.attempt_errors, result.skipped_stages, result.failed_stage,
                           result.failure.error_type if result.failure else None)
            if result.fatal is not None:
                raise result.fatal
            if wrote % 1000 == 0:
                store.flush()

        if self._local:
            # python/http stages (and `batch = false` ones) run in the worker pool as answers arrive; the main
            # thread keeps writing (the ledger, the output, the error log) and queuing.
            window = 2 * self.opts.max_workers
            with ThreadPoolExecutor(max_workers=self.opts.max_workers, thread_name_prefix="batch") as pool:
                flying: deque[tuple[Future[_Assembled], str]] = deque()
                for record, record_id in wanted():
                    flying.append((pool.submit(self._assemble, record, record_id), record_id))
                    if len(flying) >= window:
                        future, rid = flying.popleft()
                        handle(future.result(), rid)
                while flying:
                    future, rid = flying.popleft()
                    handle(future.result(), rid)
        else:
            for record, record_id in wanted():
                handle(self._assemble(record, record_id), record_id)
        store.flush()
        if wrote:
            self.settings.crash_at("written")
        if scan.complete and not self.stop():
            counts = scan.counts
            cp.total_records, cp.duplicates = counts.records, counts.duplicates
            cp.input_errors, cp.empty_rows = counts.unreadable, counts.empty
            cp.counts_exact = True
        self._swept_once = True
        return work

    def _assemble(self, record: Record, record_id: str) -> _Assembled:
        """The record through its stages as far as the answers at hand go (on a worker when there are local
        stages: it reads the ledger, never writes it)."""
        out = _Assembled()
        result = RecordResult(record_id, record.row)
        values = dict(record.values)
        for stage in self.plan.stages.stages:
            if stage.skip_if_filled and all(values.get(f, "").strip() for f in stage.skip_if_filled):
                result.skipped_stages.append(stage.name)
                values.update({f: values.get(f, "") for f in stage.fields})
                continue
            if self._batched(stage):
                outcome = self._batched_stage(stage, record, record_id, values, result, out)
                if outcome is None:
                    return out
                if outcome is False:
                    out.result = result
                    return out
                continue
            local = self.job.enricher.enrich(Record(record.row, values), record_id, [stage])
            _merge(result, local)
            if local.values is None:
                if local.abandoned:
                    self._full = True
                    return out  # a stop while a local stage ran: the record stays pending
                out.result = result
                return out
            values = local.values
        result.values = values
        out.result = result
        return out

    def _batched_stage(self, stage: Stage, record: Record, record_id: str, values: dict[str, str],
                       result: RecordResult, out: _Assembled) -> bool | None:
        """True: the stage's fields are in `values`; False: the record failed; None: it waits for Google."""
        attempts = self.ledger.attempts(stage.name, record_id)
        for item in attempts:  # every answer Google gave is paid for, once, by the record that asked
            if item.usage:
                usage = Usage(**{k: v for k, v in item.usage.items() if k != "standard_token_usd"})
                result.counters.add(usage.counters())
                result.counters.requests += 1
                cost = usage.counters().cost_usd
                if cost:
                    result.stage_cost[stage.name] = result.stage_cost.get(stage.name, 0.0) + cost
            if item.state == "error":
                result.attempt_errors.append((stage.name, item.error_type or "server_error"))
        last = attempts[-1] if attempts else None
        if last is not None and last.state == "inflight":
            return None
        if last is not None and last.state == "answered":
            values.update(last.fields or {})
            result.stage_latency.append((stage.name, 0.0))
            return True
        request = self.llm.prepare(stage, values)
        cache = self.job.cache
        if not attempts and cache is not None and request.cache_key is not None:
            hit = cache.get(request.cache_key)
            if hit is not None:  # a cached answer is never submitted
                result.counters.cache_hits += 1
                values.update({name: str(hit["fields"].get(name, "")) for name in stage.output_fields})
                return True
        # --retry-failed gives a failed record a new set of tries: the errors of earlier runs do not count.
        since = self._wall_started if self.store.mode == "retry_failed" else 0.0
        errors = [item for item in attempts if item.state == "error" and item.asked_at >= since]
        lost = [item for item in attempts if item.state in ("missing", "expired")]
        if last is not None and last.state == "error":
            failure = StageFailure(last.error_type or "server_error", last.message or "")
            out.logs.append(self._attempt_line(result, stage, last))
            if last.error_type not in _RETRIED or len(errors) > self.opts.max_retries:
                result.failure, result.failed_stage = failure, stage.name
                return False
        if len(lost) >= SYNC_AFTER:
            # Google lost this line twice: the synchronous path takes it (no Google job holds it any more).
            local = self.job.enricher.enrich(Record(record.row, values), record_id, [stage])
            _merge(result, local)
            if local.values is None:
                return None if local.abandoned else False
            values.update(local.values)
            return True
        expired = last is not None and last.state == "expired"
        out.needs.append((stage, (last.attempt + 1) if last else 1, request, expired))
        return None

    def _enqueue(self, work: _Sweep, stage: Stage, record_id: str, attempt: int, request: Request,
                 smaller: bool = False) -> None:
        """Queue a request line; a full chunk is submitted at once (memory stays bounded by one chunk a stage)."""
        model = request.payload["model"]
        charge = self.plan.pricing.charge(model, prompt_tokens=request.input_tokens, output_tokens=400,
                                          grounded=stage.search, search_queries=2, batch=True)
        lines = work.queued.setdefault((stage.name, model, smaller), [])
        lines.append(_Queued(record_id, attempt, request_line(item_key(stage.name, record_id, attempt), request),
                             charge.tokens + charge.grounding))
        size = max(1, self.settings.chunk_lines // 2 if smaller else self.settings.chunk_lines)
        if len(lines) >= size and not self.budget_hit and not self.stop():
            work.queued[(stage.name, model, smaller)] = []
            self._submit_part(stage.name, model, lines)

    @staticmethod
    def _attempt_line(result: RecordResult, stage: Stage, item: Item) -> dict[str, Any]:
        return {"record_id": result.record_id, "row": result.row, "stage": stage.name, "attempt": item.attempt,
                "error_type": item.error_type or "server_error", "message": f"batch line {item.key}: {item.message}"}

    # --- submit -------------------------------------------------------------------------------------

    def _submit(self, queued: dict[tuple[str, str, bool], list[_Queued]]) -> None:
        """What the walk left queued (less than a chunk a stage, or what a budget or a stop held back)."""
        for (stage_name, model, _), lines in queued.items():
            if lines and not self.budget_hit and not self.stop():
                self._submit_part(stage_name, model, lines)

    def _submit_part(self, stage_name: str, model: str, part: list[_Queued]) -> None:
        """One chunk: the ledger's row (planning), the request file (fsynced), its items in flight (planned), then
        the upload and the create, each recorded."""
        estimate = sum(q.estimate for q in part)
        if not self._fits(estimate):
            self.budget_hit = self._full = True
            log.warning("--max-cost: a batch job of %d requests (about $%.4f) does not fit the budget; waiting for "
                        "the jobs in flight", len(part), estimate)
            return
        chunk_id = self.ledger.new_chunk(stage_name, model, estimate)
        path = self._chunk_file(chunk_id)
        _write_durably(path, ("\n".join(q.line for q in part) + "\n").encode("utf-8"))
        self.ledger.plan(chunk_id, [(stage_name, q.record_id, q.attempt) for q in part])
        self.settings.crash_at("planned")
        self._upload(self.ledger.chunk(chunk_id))

    def _fits(self, estimate: float) -> bool:
        limit = self.opts.max_cost
        if limit is None:
            return True
        return self.ledger.spent() + self.ledger.reserved() + estimate <= limit

    def _upload(self, chunk: Chunk) -> None:
        path = self._chunk_file(chunk.id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # planned, then the file was lost: its records go again
            self._ingest(chunk.id, {}, "cancelled", "NOT_SENT", {}, "cancelled")
            return
        display = _display_prefix(self.cp.job_id, chunk) + f"{chunk.create_tries + 1}"
        try:
            file_name = self.client.upload(data, display)
        except Exception as exc:  # noqa: BLE001 - classified; the upload is tried again at the next poll
            self._call_failed("upload", exc)
            return
        self.settings.crash_at("uploaded")
        self.ledger.set_chunk(chunk.id, state="uploaded", file_name=file_name)
        path.unlink(missing_ok=True)  # Google holds the requests now (48 h); the create names its file
        self.settings.crash_at("upload_recorded")
        if not self._waiting_for_quota():
            self._create(self.ledger.chunk(chunk.id))

    def _waiting_for_quota(self) -> bool:
        """After a 429 on create (the model's enqueued-token quota is full), the next create waits until a job in
        flight ends; with none in flight, it is tried at the next poll."""
        return self._quota_full and bool(self.ledger.chunks("submitted"))

    def _create(self, chunk: Chunk) -> None:
        assert chunk.file_name is not None
        tries = chunk.create_tries + 1
        display = _display_prefix(self.cp.job_id, chunk) + str(tries)
        self.ledger.set_chunk(chunk.id, state="creating", create_tries=tries, display_name=display,
                              creating_at=time.time())
        self.settings.crash_at("creating")
        try:
            name = self.client.create(chunk.model, chunk.file_name, display)
        except Exception as exc:  # noqa: BLE001 - classified below
            failure = classify_error(exc)
            code = getattr(exc, "code", None)
            if code == 429:  # the enqueued-token quota is full: no job was made; wait for one in flight to end
                self.ledger.set_chunk(chunk.id, state="uploaded")
                self._quota_full = True
                log.warning("batch create for %s refused (429: the model's enqueued-token quota is full); trying "
                            "again once a job in flight ends", display)
                return
            if isinstance(code, int) and 400 <= code < 500 and failure.fatal is None:
                self.ledger.set_chunk(chunk.id, state="uploaded")
                raise ConfigError(f"Google refused the batch job {display}: {failure.message}") from None
            if failure.fatal is not None:
                self.ledger.set_chunk(chunk.id, state="uploaded")
                raise failure.fatal from None
            # No answer (a dropped connection, a timeout, a 5xx): the job may exist. In doubt until found.
            log.warning("batch create for %s got no clear answer (%s); looking for it by name before creating "
                        "anything", display, failure.message[:120])
            return
        self.settings.crash_at("created")
        self.ledger.set_chunk(chunk.id, state="submitted", batch_name=name, remote_state="PENDING",
                              submitted_at=time.time())
        self._ever_submitted += 1
        self.settings.crash_at("submitted")
        log.info("Google batch job %s created for %d requests of stage %s (%s)", name, chunk.lines, chunk.stage,
                 display)

    # --- cancel ---------------------------------------------------------------------------------------

    def _cancel_all(self) -> None:
        """--cancel-batches: every job of this job's in flight is cancelled at Google; its records go back to
        pending (what Google answered before the cancel is kept: it is paid for)."""
        self._settle_without_creating()
        cancelled = 0
        for chunk in self.ledger.chunks("submitted"):
            assert chunk.batch_name is not None
            self.ledger.set_chunk(chunk.id, cancel=1)
            self.settings.crash_at("cancelling")
            try:
                self.client.cancel(chunk.batch_name)
            except Exception as exc:  # noqa: BLE001 - an ended job cannot be cancelled: it is collected below
                log.info("cancel of %s: %s", chunk.batch_name, str(exc)[:160])
            cancelled += 1
        for chunk in self.ledger.chunks("uploaded", "planned"):
            self.ledger.ingest(chunk.id, {}, "cancelled", "NOT_SENT", {}, "cancelled")
        deadline = self.clock() + max(30.0, 3 * self.settings.poll)
        while self.ledger.chunks("submitted") and self.clock() < deadline:
            self._poll()
            if self.ledger.chunks("submitted"):
                self.sleep(min(1.0, self.settings.poll))
        self.say(f"Cancelled {cancelled} Google batch job(s); their unanswered records are pending again.")

    def _settle_without_creating(self) -> None:
        for chunk in self.ledger.chunks("planning"):
            self.ledger.drop_chunk(chunk.id)
        for chunk in self.ledger.chunks("creating"):
            prefix = _display_prefix(self.cp.job_id, chunk)
            found = [job for job in self.client.jobs() if job.display_name.startswith(prefix)]
            if found:
                self.ledger.set_chunk(chunk.id, state="submitted", batch_name=found[-1].name,
                                      submitted_at=time.time())
            else:
                self.ledger.set_chunk(chunk.id, state="uploaded")

    # --- helpers --------------------------------------------------------------------------------------

    def _batched(self, stage: Stage) -> bool:
        return stage.kind == "llm" and stage.raw.get("batch", True) is not False

    def _request(self, stage: Stage) -> Request:
        """A request of the stage as the reply parser needs it (stage, model, schema; never the prompt)."""
        made = self._shapes.get(stage.name)
        if made is None:
            made = self._shapes[stage.name] = self.llm.prepare(stage, dict.fromkeys(stage.placeholders(), ""))
        return made

    def _chunk_file(self, chunk_id: int) -> Path:
        folder = self.ledger.path.with_name(self.ledger.path.name.removesuffix(".sqlite") + ".files")
        return folder / f"chunk-{chunk_id:06d}.jsonl"

    def _call_failed(self, what: str, exc: Exception) -> None:
        failure = classify_error(exc)
        if failure.fatal is not None:
            raise failure.fatal from None
        log.warning("batch %s failed (%s); trying again at the next poll", what, failure.message[:160])

    def _save(self) -> None:
        self.cp.batch = self.ledger.summary()
        self.store.save(None)
        self.progress.update(self._figures())

    def _figures(self) -> Figures:
        cp, store = self.cp, self.store
        minutes = max(1e-9, (self.clock() - self._started) / 60)
        done = store.done_count() + cp.failed_count
        return Figures(done=done, total=max(cp.total_records, done), failed=cp.failed_count,
                       tokens=cp.totals.total_tokens, cost=cp.totals.cost_usd,
                       rate_per_min=(store.run_completed + store.run_failed) / minutes)

    def _fail(self, exc: EnrichError) -> None:
        if self.fatal is None:
            self.fatal = exc
            log.error("%s", exc)

    def _outcome(self, leaving: str) -> Outcome:
        cp, store = self.cp, self.store
        flying = self.ledger.chunks(*IN_FLIGHT)
        held = sum(c.lines for c in flying)
        done = store.done_count()
        left = max(0, cp.total_records - done - cp.failed_count)
        if self.fatal is not None:
            return decide_outcome(self._end(done, left, fatal=self.fatal))
        if leaving == "cancelled":
            return Outcome("interrupted", 0, f"{done} done, {left} left; no Google batch job of this job is running. "
                           "Run with --resume to continue.")
        if flying and leaving == "detached":
            return Outcome("waiting", EXIT_BATCH_RUNNING,
                           f"Waiting for Google: {len(flying)} batch job(s) running with {held} requests; {done} "
                           f"done, {left} left. Run again (--resume) to collect them.")
        if flying:
            return Outcome("waiting", 130,
                           f"Interrupted: {done} done, {left} left; {len(flying)} Google batch job(s) keep running "
                           f"({held} requests, billed when they finish). Run with --resume to collect them, or "
                           "--cancel-batches to cancel them.")
        if leaving == "budget":
            return decide_outcome(self._end(done, left, budget=True))
        return decide_outcome(self._end(done, left, stopped=leaving == "stopped"))

    def _end(self, done: int, left: int, *, fatal: EnrichError | None = None, budget: bool = False,
             stopped: bool = False) -> RunEnd:
        cost = self.cp.totals.cost_usd
        return RunEnd(done=done, failed=self.cp.failed_count, left=left, cost=cost, fatal=fatal, budget_hit=budget,
                      stopped=stopped, max_cost=self.opts.max_cost, errors_path=self.plan.paths.errors)


_RETRIED = frozenset({"rate_limit", "timeout", "server_error", "validation_error"})


def _display_prefix(job_id: str, chunk: Chunk) -> str:
    """Deterministic: the job, the stage and the chunk; the create try is appended (…-t1, -t2)."""
    return f"{job_id}-{chunk.stage}-c{chunk.id}-t"


def _line_failure(status: dict[str, Any] | None) -> StageFailure:
    """A status line classified as the synchronous path classifies the same HTTP error."""
    from google.genai import errors

    status = status or {"code": 13, "message": "the line came back with neither a response nor a status"}
    code = int(status.get("code") or 13)
    http = code if code >= 100 else GRPC_TO_HTTP.get(code, 500)
    exc = errors.APIError(http, {"error": {"code": http, "message": str(status.get("message") or ""),
                                           "status": str(status.get("status") or "")}})
    return classify_error(exc)


def _merge(into: RecordResult, part: RecordResult) -> None:
    into.counters.add(part.counters)
    into.stage_latency += part.stage_latency
    into.attempt_errors += part.attempt_errors
    into.skipped_stages += part.skipped_stages
    for name, cost in part.stage_cost.items():
        into.stage_cost[name] = into.stage_cost.get(name, 0.0) + cost
    if part.values is None:
        into.failure, into.failed_stage, into.fatal = part.failure, part.failed_stage, part.fatal


def _usage_dict(usage: Usage) -> dict[str, Any]:
    return {"model": usage.model, "prompt_tokens": usage.prompt_tokens, "output_tokens": usage.output_tokens,
            "thinking_tokens": usage.thinking_tokens, "cached_tokens": usage.cached_tokens,
            "grounded": usage.grounded, "search_queries": usage.search_queries,
            "token_cost_usd": usage.token_cost_usd, "grounding_cost_usd": usage.grounding_cost_usd}


def _write_durably(path: Path, data: bytes) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


