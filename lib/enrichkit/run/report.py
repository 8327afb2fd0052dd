"""The report (`*.report.json`), written at every exit: the whole job, with this run's figures beside it (a
`RunTally`, which the job store books as records finish)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from enrichkit.run.counters import Counters, StageTable, StageTotals
from enrichkit.store.checkpoint import Checkpoint, utc_now


@dataclass
class RunTally:
    """This run's figures (the checkpoint's are the job's), booked by the job store: what its records cost and did,
    how many it wrote and failed, and each stage's (`StageTotals`, with a sample of its call times)."""

    started_at: str = field(default_factory=utc_now)
    counters: Counters = field(default_factory=Counters)
    completed: int = 0
    failed: int = 0
    stages: StageTable = field(default_factory=StageTable)
    sample: random.Random = field(default_factory=lambda: random.Random(0))  # draws the latency reservoirs


def build_report(cp: Checkpoint, run: RunTally, *, exit_code: int, wall_seconds: float, message: str,
                 pace: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job's counts, tokens, cost, per-stage figures and fill rates, and this run's beside them."""
    minutes = wall_seconds / 60
    counters, completed, failed = run.counters, run.completed, run.failed
    done = cp.completed_count
    return {
        "job_id": cp.job_id,
        "status": cp.status,
        "exit_code": exit_code,
        "message": message,
        "started_at": run.started_at,
        "finished_at": utc_now(),
        "wall_seconds": round(wall_seconds, 3),
        "records_per_minute": round(completed / minutes, 2) if minutes > 0 else None,
        "counts": {
            "total": cp.total_records,
            "completed": done,
            "failed": cp.failed_count,
            "pending": cp.records_left,
            "skipped_duplicates": cp.duplicates,
            "input_errors": cp.input_errors,
            "empty_rows": cp.empty_rows,
            "completed_this_run": completed,
            "failed_this_run": failed,
        },
        # The whole job (every run); `this_run` below is what this run alone did.
        "requests": cp.totals.requests,
        "retries": cp.totals.retries,
        "rate_limited": cp.totals.rate_limited,
        "cache_hits": cp.totals.cache_hits,
        "tokens": _tokens(cp.totals),
        "cost_usd": round(cp.totals.cost_usd, 6),
        "cost": {**_cost(cp.totals), "unsettled_usd": round(cp.unsettled_usd, 6)},  # maybe billed: budget.py
        "stages": {name: _job_stage(name, cp, run) for name in _stage_names(cp, run)},
        "fill_rates": {f: round(cp.filled.get(f, 0) / done, 4) if done else None for f in cp.fields},
        "pace": pace or cp.pace,
        "models": cp.models,  # served models other than the one asked, unpriced answers, lifecycles (lifecycle.py)
        "this_run": {
            "completed": completed, "failed": failed, "requests": counters.requests, "retries": counters.retries,
            "rate_limited": counters.rate_limited, "cache_hits": counters.cache_hits, "tokens": _tokens(counters),
            "cost_usd": round(counters.cost_usd, 6), "cost": _cost(counters),
            "stages": {name: _run_stage(s) for name, s in run.stages.items()},
        },
        "runs": cp.runs,
    }


def _tokens(c: Counters) -> dict[str, int]:
    return {"prompt": c.prompt_tokens, "output": c.output_tokens, "thinking": c.thinking_tokens,
            "cached": c.cached_tokens, "total": c.total_tokens}


def _cost(c: Counters) -> dict[str, Any]:
    return {"tokens_usd": round(c.token_cost_usd, 6), "grounding_usd": round(c.grounding_cost_usd, 6),
            "grounded_prompts": c.grounded_prompts, "search_queries": c.search_queries}


def _stage_names(cp: Checkpoint, run: RunTally) -> list[str]:
    names = list(cp.stages)
    names += [n for n in list(cp.stage_totals) + list(run.stages) if n not in names]
    return names


def _run_stage(s: StageTotals) -> dict[str, Any]:
    return {"succeeded": s.succeeded, "skipped": s.skipped, "failed_records": dict(s.failed_records),
            "attempt_errors": dict(s.attempt_errors), "latency_ms": s.latency_ms()}


def _job_stage(name: str, cp: Checkpoint, run: RunTally) -> dict[str, Any]:
    job = cp.stage_totals.get(name) or StageTotals()
    this = run.stages.get(name)
    return {"succeeded": job.succeeded, "skipped": job.skipped, "cost_usd": round(job.cost_usd, 6),
            "failed_records": dict(job.failed_records), "attempt_errors": dict(job.attempt_errors),
            "latency_ms": this.latency_ms() if this is not None else None}  # of this run's calls
