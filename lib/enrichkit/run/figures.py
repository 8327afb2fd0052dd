"""The figures a running job shows (its progress bar or log line), as the store and the limiters have them."""

from __future__ import annotations

from typing import Any

from enrichkit.config.plan import JobMode
from enrichkit.run.progress import Figures
from enrichkit.store.jobstore import JobStore


def progress_span(store: JobStore) -> tuple[int, int]:
    """(records the run is about, those of them already done or failed when it starts)."""
    cp = store.cp
    if store.mode == JobMode.RETRY_FAILED:
        return cp.failed_count, 0
    return cp.total_records, cp.completed_count + cp.failed_count


def current_figures(store: JobStore, *, minutes: float, pace: dict[str, Any]) -> Figures:
    """`minutes` the run has taken so far; `pace` the limiters' figures (`Job.pace()`)."""
    cp, run = store.cp, store.run
    total, _ = progress_span(store)
    if store.mode == JobMode.RETRY_FAILED:
        done = run.completed + run.failed
        failed = run.failed
    else:
        done = store.done_count() + cp.failed_count
        failed = cp.failed_count
    # 429s this run so far as the limiters count them (also those of records still retrying; limiters are per run).
    live_rate_limited = sum(int(figures.get("rate_limited") or 0) for figures in pace.values())
    return Figures(done=done, total=max(total, done), failed=failed, tokens=cp.totals.total_tokens,
                   cost=cp.totals.cost_usd, rate_per_min=(run.completed + run.failed) / max(1e-9, minutes),
                   rate_limited=max(run.counters.rate_limited, live_rate_limited), retries=run.counters.retries)
