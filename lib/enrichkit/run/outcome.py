"""How a run ended: the facts at its end (`EndFacts`), the verdict they make (`Verdict`: status, exit code, closing
line; pure, `decide_verdict`), the `EndedRun` a run returns (the public `enrichkit.RunResult` is made from it), and
the summary printed after the closing line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enrichkit.errors import EXIT_BUDGET, EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, AuthError, EnrichError, WriteFailed


@dataclass(frozen=True)
class Verdict:
    """What a run's end means: the checkpoint's status, the exit code, the closing line."""

    status: str  # the checkpoint's status
    exit_code: int
    message: str  # the closing line on stderr
    reason: str = ""  # "limit": stopped at --limit (the checkpoint's stop_reason)


@dataclass(frozen=True)
class EndFacts:
    """Why the run stopped, and where the job stands: what the verdict is decided from."""

    done: int
    failed: int
    left: int
    cost: float = 0.0
    unsettled: float = 0.0  # USD held for requests given up at their deadline (Google may have billed them)
    fatal: EnrichError | None = None  # auth, quota, billing, outage, configuration, a write failure
    budget_hit: bool = False
    stopped: bool = False  # a signal, `jobs.py cancel`, or the fatal/budget stop itself
    limit_hit: bool = False
    limit: int | None = None
    max_cost: float | None = None
    next_call: float = 0.0  # the worst case of the call the budget refused
    errors_path: Path | str = ""
    input_changed: str = ""  # the input's path when its size or mtime changed during the run


def decide_verdict(end: EndFacts) -> Verdict:
    """The first that applies: fatal error, budget, signal, --limit, failures, records not reached, done."""
    done, failed, left = end.done, end.failed, end.left
    if end.fatal is not None:
        status = "failed" if isinstance(end.fatal, AuthError) or end.fatal.exit_code == 2 else "interrupted"
        resume = " Run with --resume to continue." if not isinstance(end.fatal, WriteFailed | AuthError) else ""
        return Verdict(status, end.fatal.exit_code, f"Stopped: {end.fatal}. {done} done, {left} left.{resume}")
    if end.budget_hit:
        refused = f"; the next call could cost up to ${end.next_call:.4f}" if end.next_call else ""
        if end.unsettled:
            refused += (f"; ${end.unsettled:.4f} more is held for requests given up at their deadline, which Google "
                        "may have billed")
        return Verdict("budget_exhausted", EXIT_BUDGET,
                       f"Budget reached: ${end.cost:.4f} spent (--max-cost {end.max_cost}{refused}); "
                       f"{done} done, {left} left. Raise --max-cost and run with --resume to continue.")
    if end.input_changed:
        return Verdict("interrupted", EXIT_FAILURES,
                       f"The input changed during the run ({end.input_changed}): {done} done, {failed} failed. "
                       "Run with --resume to go on with the rows it holds now.")
    if end.stopped:
        return Verdict("interrupted", EXIT_INTERRUPTED,
                       f"Interrupted: {done} done, {left} left. Run with --resume to continue.")
    if end.limit_hit and left:  # exit 1, never 0: records are left (cron lines are removed on exit 0)
        return Verdict("interrupted", EXIT_FAILURES,
                       f"Stopped after --limit {end.limit}: {done} done, {left} left. Run with --resume to continue.",
                       reason="limit")
    if failed:
        status = "interrupted" if left else "completed_with_failures"
        not_tried = f", {left} not yet tried" if left else ""
        return Verdict(status, EXIT_FAILURES,
                       f"Finished with failures: {done} done, {failed} failed{not_tried}. Details in "
                       f"{end.errors_path}; run with --retry-failed to try them again.")
    if left:  # never 0: exit 0 says every record is done (cron lines are removed on it)
        return Verdict("interrupted", EXIT_FAILURES,
                       f"Not finished: {done} done, {left} not yet tried. Run with --resume to continue.")
    return Verdict("completed", EXIT_OK, f"Done: all {done} records enriched.")


@dataclass(frozen=True)
class EndedRun:
    """A run that ended: its verdict, its report, and how many records it left on the wire (their threads still
    wait for their calls)."""

    verdict: Verdict
    report: dict[str, Any]
    abandoned: int


def summary(report: dict[str, Any], files: list[Path], next_steps: Sequence[str] = ()) -> str:
    """The lines printed under the closing line: the job's counts, this run's figures, and the commands that
    go on from here (`next_steps`: "what: command", runnable from any folder)."""
    c = report["counts"]
    run = report["this_run"]
    t = report["tokens"]
    cost = report["cost"]
    grounding = f" (grounding ${cost['grounding_usd']:.4f})" if cost["grounding_usd"] else ""
    unconfirmed = run.get("unconfirmed") or 0
    kept = (f" ({unconfirmed} of them written but not confirmed on disk: --resume keeps those it finds whole)"
            if unconfirmed else "")
    done = f"{c['completed']}/{c['total']} done"
    if c["completed"] > c["total"]:  # the output holds rows of records the input no longer has (or not yet counted)
        done = f"{c['completed']} done (the input holds {c['total']} records now)"
    return "\n".join([
        (f"  records: {done}, {c['failed']} failed, {c['pending']} pending, "
         f"{c['skipped_duplicates']} duplicate rows skipped, {c['input_errors']} unreadable rows, "
         f"{c['empty_rows']} empty rows"),
        (f"  this run: {c['completed_this_run']} done{kept} in {report['wall_seconds']:.1f} s "
         f"({report['records_per_minute'] or 0:.1f} rec/min), {run['requests']} requests, "
         f"{run['retries']} retries, {run['rate_limited']} rate-limited, {run['cache_hits']} cache hits, "
         f"${run['cost_usd']:.4f}"),
        (f"  job: {t['total']:,} tokens ({t['prompt']:,} in, {t['output']:,} out), "
         f"cost ${report['cost_usd']:.4f}{grounding}"),
        "  files: " + "  ".join(str(f) for f in files),
        *(f"  {step}" for step in next_steps),
    ])
