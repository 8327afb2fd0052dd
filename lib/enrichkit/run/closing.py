"""The end of a run: how its last walk ended booked (the input's counts, the resume mark), the facts its verdict
is decided from, and the closing lines (the verdict, the summary and the commands that go on)."""

from __future__ import annotations

from collections.abc import Callable

from enrichkit.commands import next_steps
from enrichkit.config.plan import JobMode, Plan
from enrichkit.errors import EnrichError
from enrichkit.pace.budget import Budget
from enrichkit.run.outcome import EndedRun, EndFacts, summary
from enrichkit.store.jobstore import JobStore
from enrichkit.tables.scan import PendingScan


def input_changed(plan: Plan) -> bool:
    """Did another program rewrite the input while this run read it? Its counts would then be of a file that no
    longer exists: the job is not called done, and the next run reads it afresh."""
    table = plan.table
    try:
        st = table.path.stat()
    except OSError:
        return True
    return (st.st_size, st.st_mtime) != (table.size, table.mtime)


def walk_ended(plan: Plan, store: JobStore, scan: PendingScan, *, stopped: bool) -> None:
    """Book what the run's last walk learnt of the input: its counts, and whether records are missing before the
    resume mark."""
    cp = store.cp
    if input_changed(plan):
        store.counts_unknown()  # the next run compares the input with the checkpoint's, and recounts
        return
    if scan.complete:
        store.counted(scan.counts)
        store.mark.walk_ended(whole=True, reached_end=True, missing=False)
    elif scan.exhausted and store.mode != JobMode.RETRY_FAILED and not stopped and not scan.limit_hit:
        # Every readable record after the walk's start was met, so nothing is left after it.
        store.at_least(store.done_count() + cp.failed_count)
        store.mark.walk_ended(whole=False, reached_end=True,
                              missing=cp.total_records > store.done_count() + cp.failed_count)


def end_facts(plan: Plan, store: JobStore, budget: Budget | None, *, fatal: EnrichError | None, budget_hit: bool,
              stopped: bool, limit_hit: bool) -> EndFacts:
    cp = store.cp
    done = store.done_count()
    return EndFacts(done=done, failed=cp.failed_count, left=max(0, cp.total_records - done - cp.failed_count),
                    cost=cp.totals.cost_usd, unsettled=store.unsettled(budget.given_up if budget is not None else 0.0),
                    fatal=fatal, budget_hit=budget_hit, stopped=stopped, limit_hit=limit_hit, limit=plan.options.limit,
                    max_cost=plan.options.max_cost, next_call=budget.refused_at if budget is not None else 0.0,
                    errors_path=plan.paths.errors,
                    input_changed=str(plan.table.path) if input_changed(plan) else "")


def say_closing(plan: Plan, ended: EndedRun, say: Callable[[str], None]) -> None:
    """The closing line, then (unless --quiet) the summary, the job's files and the commands that go on."""
    say(ended.verdict.message)
    if not plan.options.quiet:
        paths = plan.paths
        say(summary(ended.report, [paths.output, paths.checkpoint, paths.report, paths.errors],
                    next_steps(paths, ended.verdict, ended.report)))
