"""The report (`*.report.json`), written at every exit: the whole job, with this run's figures beside it."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from enrichkit.run.counters import Counters
from enrichkit.store.checkpoint import Checkpoint, utc_now

_SAMPLES = 5000  # latency reservoir per stage: percentiles in constant memory


@dataclass
class StageStats:
    """One stage in this run: successes, failures by error type, latency percentiles."""

    succeeded: int = 0
    skipped: int = 0
    failed_records: Counter[str] = field(default_factory=Counter)
    attempt_errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seen: int = 0

    def add_latency(self, seconds: float, rng: random.Random) -> None:
        self.seen += 1
        if len(self.latencies) < _SAMPLES:
            self.latencies.append(seconds)
        else:
            j = int(rng.random() * self.seen)
            if j < _SAMPLES:
                self.latencies[j] = seconds

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1) if ordered else None

        return {"succeeded": self.succeeded, "skipped": self.skipped, "failed_records": dict(self.failed_records),
                "attempt_errors": dict(self.attempt_errors),
                "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99),
                               "max": round(ordered[-1] * 1000, 1) if ordered else None}}


@dataclass
class RunStats:
    """This run's per-stage figures, kept by the pipeline's main thread only."""

    started_at: str = field(default_factory=utc_now)
    stages: dict[str, StageStats] = field(default_factory=lambda: defaultdict(StageStats))
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def add(self, stage_latency: list[tuple[str, float]], skipped: list[str], failed_stage: str | None,
            failure_type: str | None) -> None:
        for stage, seconds in stage_latency:
            s = self.stages[stage]
            s.succeeded += 1
            s.add_latency(seconds, self._rng)
        for stage in skipped:
            self.stages[stage].skipped += 1
        if failure_type is not None:
            self.stages[failed_stage or "?"].failed_records[failure_type] += 1

    def add_attempt_error(self, stage: str, error_type: str) -> None:
        self.stages[stage].attempt_errors[error_type] += 1


def build_report(cp: Checkpoint, run: RunStats, counters: Counters, *, completed: int, failed: int, exit_code: int,
                 wall_seconds: float, message: str, pace: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job's counts, tokens, cost, per-stage figures and fill rates, and this run's beside them."""
    minutes = wall_seconds / 60
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
            "stages": {name: s.to_json() for name, s in run.stages.items()},
        },
        "runs": cp.runs,
    }


def _tokens(c: Counters) -> dict[str, int]:
    return {"prompt": c.prompt_tokens, "output": c.output_tokens, "thinking": c.thinking_tokens,
            "cached": c.cached_tokens, "total": c.total_tokens}


def _cost(c: Counters) -> dict[str, Any]:
    return {"tokens_usd": round(c.token_cost_usd, 6), "grounding_usd": round(c.grounding_cost_usd, 6),
            "grounded_prompts": c.grounded_prompts, "search_queries": c.search_queries}


def _stage_names(cp: Checkpoint, run: RunStats) -> list[str]:
    names = list(cp.stages)
    names += [n for n in list(cp.stage_totals) + list(run.stages) if n not in names]
    return names


def _job_stage(name: str, cp: Checkpoint, run: RunStats) -> dict[str, Any]:
    job = cp.stage_totals.get(name, {})
    this = run.stages[name].to_json() if name in run.stages else None
    return {"succeeded": job.get("succeeded", 0), "skipped": job.get("skipped", 0),
            "cost_usd": round(float(job.get("cost_usd", 0.0)), 6),
            "failed_records": dict(job.get("failed_records", {})),
            "attempt_errors": dict(job.get("attempt_errors", {})),
            "latency_ms": this["latency_ms"] if this else None}  # of this run's calls
