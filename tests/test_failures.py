"""Transient errors are retried, permanent ones fail the record at once, --retry-failed redoes failures."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import Workspace, expected_ids, read_json
from enrichkit.errors import StageFailure


@pytest.fixture
def ws(fws: Workspace) -> Workspace:
    """This file's runs answer from the fake provider on a fake clock (`sws`, the stand-in, where a real
    timeout on the wire is the point)."""
    return fws


def _errors(ws: Workspace) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in ws.errors.read_text().splitlines()]


def _fast(ws: Workspace, **extra: str) -> dict[str, str]:
    return ws.env(ENRICHKIT_BACKOFF_BASE="0.01", **extra)


def _fail(ws: Workspace, *texts: str, error_type: str = "client_error", times: int = 1) -> None:
    """The prompts that mention any of `texts` fail `times` times with `error_type` (a 400 is not retried)."""
    assert ws.provider is not None
    for text in texts:
        ws.provider.outcomes[text] = [StageFailure(error_type, f"{error_type} for {text.strip()}")] * times


def _heal(ws: Workspace) -> None:
    assert ws.provider is not None
    ws.provider.outcomes.clear()


def _by_prompt(ws: Workspace) -> Counter[str]:
    assert ws.provider is not None
    return Counter(text for _, text in ws.provider.calls)


def test_permanent_400_fails_at_once_then_retry_failed_after_the_api_heals(ws: Workspace) -> None:
    _fail(ws, "Fund 00003 ", "Fund 00017 ")
    proc = ws.run()
    assert proc.returncode == 1, proc.stderr
    assert "--retry-failed" in proc.stderr
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "completed_with_failures"
    assert cp["completed_count"] == 38 and cp["failed_count"] == 2
    assert len(ws.output_ids()) == 38
    errors = _errors(ws)
    assert [(e["error_type"], e["attempt"], e["stage"]) for e in errors] == [("client_error", 1, "poc")] * 2
    assert {e["record_id"] for e in errors} == set(cp["failed_ids"])
    # Not retried: each failing prompt was asked once.
    assert ws.fake.stats()["generate"] == 40 and max(_by_prompt(ws).values()) == 1
    assert len(cp["errors"]) == 2

    _heal(ws)
    retried = ws.run("--retry-failed")
    assert retried.returncode == 0, retried.stderr
    cp = read_json(ws.checkpoint)
    assert cp["failed_ids"] == [] and cp["completed_count"] == 40 and cp["status"] == "completed"
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) == 40 and set(ids) == expected_ids(ws)
    assert ws.fake.stats()["generate"] == 42  # only the two failures were asked again


def test_resume_leaves_failed_records_to_retry_failed(ws: Workspace) -> None:
    _fail(ws, "Fund 00005 ")
    assert ws.run().returncode == 1
    _heal(ws)
    again = ws.run("--resume")
    assert again.returncode == 1  # still failed: --resume does not pay for failures again
    assert ws.fake.stats()["generate"] == 40


def test_server_errors_and_malformed_answers_are_retried_to_success(ws: Workspace) -> None:
    _fail(ws, "Fund 00001 ", "Fund 00011 ", "Fund 00021 ", error_type="server_error", times=3)
    _fail(ws, "Fund 00002 ", "Fund 00022 ", error_type="validation_error", times=2)
    proc = ws.run("--max-retries", "8")
    assert proc.returncode == 0, proc.stderr
    assert len(set(ws.output_ids())) == 40
    kinds = {e["error_type"] for e in _errors(ws)}
    assert kinds == {"server_error", "validation_error"}
    cp = read_json(ws.checkpoint)
    assert cp["retries"] == len(_errors(ws)) == 3 * 3 + 2 * 2 and cp["requests"] == 40 + cp["retries"]
    assert ws.clock is not None and len(ws.clock.sleeps) >= cp["retries"]  # the backoff waited, on the fake clock


def test_timeouts_are_retried(sws: Workspace) -> None:
    sws.fake.configure(timeout_rate=0.2, hang_seconds=5, seed=3)
    proc = sws.run("--max-retries", "8", "--timeout", "0.5", "--max-workers", "20", env=_fast(sws))
    assert proc.returncode == 0, proc.stderr
    assert len(set(sws.output_ids())) == 40
    assert {e["error_type"] for e in _errors(sws)} == {"timeout"}


def test_retries_exhausted_fail_the_record_and_log_every_attempt(ws: Workspace) -> None:
    _fail(ws, "Fund 00000 ", error_type="server_error", times=10)
    proc = ws.run("--max-retries", "2", "--max-workers", "1", "--limit", "1")
    assert proc.returncode == 1, proc.stderr
    errors = _errors(ws)
    assert [e["attempt"] for e in errors] == [1, 2, 3]
    assert {e["error_type"] for e in errors} == {"server_error"}
    assert read_json(ws.checkpoint)["failed_count"] == 1


def test_failed_stage_two_does_not_pay_for_stage_one_again(ws: Workspace) -> None:
    ws.stages.write_text(ws.stages.read_text() + '''
[[stages]]
name = "fund"
prompt = "How large is {fund.title}, whose contact is {poc_name}?"
[stages.fields]
fund_size = "number"
''', encoding="utf-8")
    _fail(ws, "How large is Fund 00009")
    assert ws.run().returncode == 1
    first = ws.fake.stats()["generate"]
    assert first == 80
    _heal(ws)
    assert ws.run("--retry-failed").returncode == 0
    assert ws.fake.stats()["generate"] == 81  # stage 1 came from the cache
    assert read_json(ws.checkpoint)["cache_hits"] == 1
    # Each stage-1 prompt was asked exactly once over both runs; only the failed stage-2 prompt twice.
    asked = _by_prompt(ws)
    assert sum(asked.values()) == 81 and sorted(asked.values())[-1] == 2


def test_one_failed_attempt_is_booked_once_everywhere(ws: Workspace) -> None:
    """A 503 then a success: one line in the error log, one attempt error in the job's stage totals (checkpoint
    and report) and in this run's, one retry; the record is done."""
    _fail(ws, "Fund 00004 ", error_type="server_error", times=1)
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    assert [(e["stage"], e["error_type"], e["attempt"]) for e in _errors(ws)] == [("poc", "server_error", 1)]
    cp = read_json(ws.checkpoint)
    assert cp["stage_totals"]["poc"]["attempt_errors"] == {"server_error": 1}
    assert cp["retries"] == 1
    report = read_json(ws.report)
    assert report["stages"]["poc"]["attempt_errors"] == {"server_error": 1}
    assert report["this_run"]["stages"]["poc"]["attempt_errors"] == {"server_error": 1}
