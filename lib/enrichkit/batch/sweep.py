"""The walk over pending records: each through its stages as far as the answers at hand go (python/http stages in the
worker pool), finished records to the job store, missing answers queued as request lines.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from enrichkit.batch.google import request_line
from enrichkit.batch.ledger import Item, item_key
from enrichkit.batch.parts import (
    SYNC_AFTER,
    BatchState,
    _Assembled,
    _merge,
    _Queued,
    _Sweep,
    _usage_of,
)
from enrichkit.config.plan import JobMode
from enrichkit.config.stages import Stage
from enrichkit.errors import TRANSIENT, StageFailure
from enrichkit.providers.base import Request
from enrichkit.run.enricher import RecordResult
from enrichkit.tables.records import Record
from enrichkit.tables.scan import PendingScan


class Sweeping(BatchState):
    """Records through their stages; the main thread writes, workers only read."""

    def _sweep(self) -> _Sweep:
        """Every pending record through its stages as far as the answers at hand go."""
        store, cp = self.store, self.cp
        retrying = store.mode == JobMode.RETRY_FAILED
        counting = store.mark.must_count and not self._swept_once
        failed = cp.failed_ids
        # After the first walk, a record is looked at again only when one of its lines came back: the others are
        # still held by Google (a million-record job is not re-read whole at every poll).
        full, touched = self._full or counting, self._touched
        # --limit N: the run takes on at most N pending records (those already in flight among them).
        scan = PendingScan(self.plan.table, self.plan.id_columns, done=cp.completed_ids.__contains__,
                           wanted=lambda rid: (rid in failed) == retrying, count_input=counting,
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
                store.log_error(self._local_errors.popleft())  # the store books the job's and the run's figures
            for line in done.logs:
                store.log_error(line)
                store.run.stages.add_attempt_error(line["stage"], line["error_type"])  # the run's only
            for stage, attempt, request, smaller in done.needs:
                self._enqueue(work, stage, record_id, attempt, request, smaller)
            result = done.result
            if result is None:
                return
            store.commit(result)
            wrote += 1
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
            store.counted(scan.counts)
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
                usage = _usage_of(item.usage)
                result.counters.add(usage)
                result.counters.requests += 1
                cost = usage.cost_usd
                if cost:
                    result.stage_cost[stage.name] = result.stage_cost.get(stage.name, 0.0) + cost
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
        since = self._wall_started if self.store.mode == JobMode.RETRY_FAILED else 0.0
        errors = [item for item in attempts if item.state == "error" and item.asked_at >= since]
        lost = [item for item in attempts if item.state in ("missing", "expired", "failed_job")]
        if last is not None and last.state == "error":
            failure = StageFailure(last.error_type or "server_error", last.message or "")
            out.logs.append(self._attempt_line(result, stage, last))
            if last.error_type not in TRANSIENT or len(errors) > self.opts.max_retries:
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
