"""How a run ends: status, exit code and closing line for every way a run can stop."""

from __future__ import annotations

import pytest

from enrichkit.checkpoint import Checkpoint
from enrichkit.errors import AuthError
from enrichkit.outcome import RunEnd, decide_outcome
from enrichkit.retry import OutageError, QuotaExhausted


def _cp(done: int, failed: int, total: int) -> Checkpoint:
    cp = Checkpoint(job_id="j", output="o", input={}, stages=[], config_fingerprint="f", total_records=total)
    for i in range(done):
        cp.mark_completed(f"{i:016x}")
    for i in range(failed):
        cp.mark_failed(f"{i + 1000:016x}")
    return cp


@pytest.mark.parametrize(("cp", "end", "status", "code", "words"), [
    (_cp(10, 0, 10), RunEnd(), "completed", 0, "Done: all 10 records enriched."),
    (_cp(8, 2, 10), RunEnd(errors_path="e.jsonl"), "completed_with_failures", 1, "--retry-failed"),
    (_cp(4, 0, 10), RunEnd(stopped=True), "interrupted", 130,
     "Interrupted: 4 done, 6 left. Run with --resume to continue."),
    (_cp(4, 0, 10), RunEnd(limit_hit=True, limit=4), "interrupted", 0, "Stopped after --limit 4"),
    (_cp(4, 0, 10), RunEnd(budget_hit=True, stopped=True, max_cost=1.0), "budget_exhausted", 4, "--max-cost"),
    (_cp(4, 0, 10), RunEnd(fatal=AuthError("bad key"), stopped=True), "failed", 2, "bad key"),
    (_cp(4, 0, 10), RunEnd(fatal=QuotaExhausted("quota"), stopped=True), "interrupted", 1, "4 done, 6 left"),
    (_cp(4, 0, 10), RunEnd(fatal=OutageError("down"), stopped=True), "interrupted", 1, "down"),
    (_cp(4, 1, 10), RunEnd(), "interrupted", 1, "5 not yet tried"),
])
def test_decide_outcome(cp: Checkpoint, end: RunEnd, status: str, code: int, words: str) -> None:
    outcome = decide_outcome(cp, end)
    assert (outcome.status, outcome.exit_code) == (status, code)
    assert words in outcome.message
