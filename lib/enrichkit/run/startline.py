"""The line a run starts with: the job, its mode, how many records it has to do, the workers, the pace each model's
limiter was given, and the stages."""

from __future__ import annotations

from typing import Any

from enrichkit.config.plan import JobMode, Plan
from enrichkit.store.jobstore import JobStore


def start_line(plan: Plan, store: JobStore, pace: dict[str, Any]) -> str:
    """`pace`: each model's limiter figures (`Job.pace()`)."""
    opts, cp = plan.options, store.cp
    kinds = ", ".join(f"{s.name} ({plan.stages.model_for(s, opts.model)})" if s.kind == "llm"
                      else f"{s.name} ({s.kind})" for s in plan.stages.stages)
    retrying = store.mode == JobMode.RETRY_FAILED
    todo = cp.failed_count if retrying else cp.records_left
    exact = cp.counts_exact or retrying
    count = f"{todo}" if exact else f"about {todo} (estimated from the file's lines)"
    if opts.limit is not None and opts.limit < todo:
        count = f"{opts.limit} (--limit) of {count}"
    return (f"{cp.job_id}: {store.mode.label}, {count} records to do, "
            f"{opts.max_workers} workers, {_limits(pace)}; stages: {kinds}")


def _limits(pace: dict[str, Any]) -> str:
    """The pace each model's limiter was given (one figure when every model has the same)."""
    given = {model: ", ".join(f"{key} {figures[key]:,.0f}" for key in ("rpm", "tpm") if figures.get(key))
             for model, figures in pace.items()}
    if not any(given.values()):
        return "no rpm/tpm"
    if len(set(given.values())) == 1:
        return next(iter(given.values()))
    return ", ".join(f"{model} {figures or 'no rpm/tpm'}" for model, figures in given.items())
