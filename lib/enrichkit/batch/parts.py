"""The parts a batch run is made of: what they share (`BatchState`), its settings, and small helpers."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enrichkit.batch.google import BatchClient
from enrichkit.batch.ledger import Chunk, Ledger
from enrichkit.config.plan import Plan, RunOptions
from enrichkit.config.stages import Stage
from enrichkit.errors import StageFailure
from enrichkit.logs import log
from enrichkit.pace.classify import classify_error
from enrichkit.providers.base import Request, Usage
from enrichkit.run.enricher import AttemptError, RecordResult
from enrichkit.run.job import Job
from enrichkit.run.stopping import StopSignal
from enrichkit.store.checkpoint import Checkpoint
from enrichkit.store.jobstore import JobStore

GRPC_TO_HTTP = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 7: 403, 8: 429, 9: 400, 10: 409, 13: 500, 14: 503, 16: 401}
RETRY_ELSEWHERE = ("missing", "expired", "cancelled", "failed_job")  # no answer, no attempt used up
SYNC_AFTER = 2  # a (stage, record) whose line was lost this often (missing, expired, a failed job) goes synchronously
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


def list_pause(poll: float, settle: float) -> float:
    """The pause between two looks at `batches.list` for the job of a create in doubt: a second, or less when the
    settle time or --batch-poll is shorter (the tests poll every 0.05 s)."""
    return min(1.0, max(min(poll, settle), 0.05))


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

class BatchState:
    """What the parts of a batch run share (set by `BatchRun.__init__`)."""

    plan: Plan
    job: Job
    ledger: Ledger
    client: BatchClient
    settings: BatchSettings
    store: JobStore
    cp: Checkpoint
    opts: RunOptions
    stop: StopSignal
    say: Callable[[str], None]
    clock: Callable[[], float]
    sleep: Callable[[float], object]
    llm: Any
    budget_hit: bool
    _ledger_counted: float
    _seen: dict[int, tuple[str, float]]
    _dirty: bool
    _full: bool
    _touched: set[str]
    _swept_once: bool
    _shapes: dict[str, Request]
    _quota_full: bool
    _local: bool
    _local_errors: deque[AttemptError]
    _wall_started: float

    def _batched(self, stage: Stage) -> bool:
        return stage.kind == "llm" and stage.raw.get("batch", True) is not False

    def _ingest(self, chunk_id: int, results: dict[str, tuple[str, dict[str, Any]]], state: str, remote: str,
                stats: dict[str, Any], left_as: str) -> None:
        """The chunk's outcome into the ledger; its records are looked at by the next sweep."""
        self.ledger.ingest(chunk_id, results, state, remote, stats, left_as)
        self._quota_full = False  # a job ended: its enqueued tokens are free again
        self._touched.update(item.record_id for item in self.ledger.items_of(chunk_id))
        self._dirty = True

    def _call_failed(self, what: str, exc: Exception) -> None:
        failure = classify_error(exc)
        if failure.fatal is not None:
            raise failure.fatal from None
        log.warning("batch %s failed (%s); trying again at the next poll", what, failure.message[:160])

    # Each made by one part, called by another (the parts meet in `BatchRun`).

    def _submit_part(self, stage_name: str, model: str, part: list[_Queued]) -> None:
        raise NotImplementedError  # enrichkit.batch.submit.Submitting

    def _poll(self) -> None:
        raise NotImplementedError  # enrichkit.batch.collect.Collecting


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


def _usage_of(data: dict[str, Any]) -> Usage:
    """A ledger's usage dict (`_usage_dict`) back: its `grounded` flag is the answer's one grounded prompt."""
    counts = {key: value for key, value in data.items() if key not in ("standard_token_usd", "grounded")}
    return Usage(**counts, grounded_prompts=int(bool(data.get("grounded"))))


def _write_durably(path: Path, data: bytes) -> None:

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
