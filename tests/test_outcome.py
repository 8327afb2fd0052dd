"""How a run ends: status, exit code and closing line for every way a run can stop."""

from __future__ import annotations

import pytest

from enrichkit.errors import AuthError, BillingError, ConfigError, OutageError, QuotaExhausted, WriteFailed
from enrichkit.run.outcome import EndFacts, decide_verdict


def _end(done: int, failed: int, total: int, **kwargs: object) -> EndFacts:
    return EndFacts(done=done, failed=failed, left=total - done - failed, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("end", "status", "code", "words"), [
    (_end(10, 0, 10), "completed", 0, "Done: all 10 records enriched."),
    (_end(8, 2, 10, errors_path="e.jsonl"), "completed_with_failures", 1, "--retry-failed"),
    (_end(4, 0, 10, stopped=True), "interrupted", 130, "Interrupted: 4 done, 6 left. Run with --resume to continue."),
    (_end(4, 0, 10, limit_hit=True, limit=4), "interrupted", 1, "Stopped after --limit 4"),  # records left: never 0
    (_end(4, 0, 10, budget_hit=True, stopped=True, max_cost=1.0), "budget_exhausted", 4, "--max-cost"),
    (_end(4, 0, 10, fatal=AuthError("bad key"), stopped=True), "failed", 2, "bad key"),
    (_end(4, 0, 10, fatal=ConfigError("model retired"), stopped=True), "failed", 2, "model retired"),
    (_end(4, 0, 10, fatal=QuotaExhausted("quota"), stopped=True), "interrupted", 1,
     "4 done, 6 left. Run with --resume"),
    (_end(4, 0, 10, fatal=BillingError("credits"), stopped=True), "interrupted", 1, "credits"),
    (_end(4, 0, 10, fatal=OutageError("down"), stopped=True), "interrupted", 1, "down"),
    (_end(4, 0, 10, fatal=WriteFailed("out.csv", "No space left on device"), stopped=True), "interrupted", 1,
     "cannot write out.csv: No space left on device; free space or fix the folder, then run again with --resume"),
    (_end(4, 1, 10), "interrupted", 1, "5 not yet tried"),
    (_end(4, 0, 6), "interrupted", 1, "2 not yet tried"),  # records left are never exit 0
])
def test_decide_verdict(end: EndFacts, status: str, code: int, words: str) -> None:
    outcome = decide_verdict(end)
    assert (outcome.status, outcome.exit_code) == (status, code)
    assert words in outcome.message
