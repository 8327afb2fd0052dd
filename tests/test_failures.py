"""Transient errors are retried, permanent ones fail the record at once, --retry-failed redoes failures."""

from __future__ import annotations

import json

from conftest import Workspace, expected_ids, read_json


def _errors(ws: Workspace) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in ws.errors.read_text().splitlines()]


def _fast(ws: Workspace, **extra: str) -> dict[str, str]:
    return ws.env(ENRICHKIT_BACKOFF_BASE="0.01", **extra)


def test_permanent_400_fails_at_once_then_retry_failed_after_the_stand_in_heals(ws: Workspace) -> None:
    ws.fake.configure(fail_matching=["Fund 00003 ", "Fund 00017 "])
    proc = ws.run(env=_fast(ws))
    assert proc.returncode == 1, proc.stderr
    assert "--retry-failed" in proc.stderr
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "completed_with_failures"
    assert cp["completed_count"] == 38 and cp["failed_count"] == 2
    assert len(ws.output_ids()) == 38
    errors = _errors(ws)
    assert [(e["error_type"], e["attempt"], e["stage"]) for e in errors] == [("client_error", 1, "poc")] * 2
    assert {e["record_id"] for e in errors} == set(cp["failed_ids"])
    # Not retried: each failing prompt reached the stand-in once.
    by_prompt = ws.fake.stats()["by_prompt"]
    assert ws.fake.stats()["generate"] == 40 and max(by_prompt.values()) == 1
    assert len(cp["errors"]) == 2

    ws.fake.configure(fail_matching=[])
    retried = ws.run("--retry-failed", env=_fast(ws))
    assert retried.returncode == 0, retried.stderr
    cp = read_json(ws.checkpoint)
    assert cp["failed_ids"] == [] and cp["completed_count"] == 40 and cp["status"] == "completed"
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) == 40 and set(ids) == expected_ids(ws)
    assert ws.fake.stats()["generate"] == 42  # only the two failures were asked again


def test_resume_leaves_failed_records_to_retry_failed(ws: Workspace) -> None:
    ws.fake.configure(fail_matching=["Fund 00005 "])
    assert ws.run(env=_fast(ws)).returncode == 1
    ws.fake.configure(fail_matching=[])
    again = ws.run("--resume", env=_fast(ws))
    assert again.returncode == 1  # still failed: --resume does not pay for failures again
    assert ws.fake.stats()["generate"] == 40


def test_server_errors_and_malformed_answers_are_retried_to_success(ws: Workspace) -> None:
    ws.fake.configure(error_rate=0.25, malformed_rate=0.15, seed=5)
    proc = ws.run("--max-retries", "8", env=_fast(ws))
    assert proc.returncode == 0, proc.stderr
    assert len(set(ws.output_ids())) == 40
    kinds = {e["error_type"] for e in _errors(ws)}
    assert kinds == {"server_error", "validation_error"}
    cp = read_json(ws.checkpoint)
    assert cp["retries"] == len(_errors(ws)) and cp["requests"] == 40 + cp["retries"]


def test_timeouts_are_retried(ws: Workspace) -> None:
    ws.fake.configure(timeout_rate=0.2, hang_seconds=5, seed=3)
    proc = ws.run("--max-retries", "8", "--timeout", "0.5", "--max-workers", "20", env=_fast(ws))
    assert proc.returncode == 0, proc.stderr
    assert len(set(ws.output_ids())) == 40
    assert {e["error_type"] for e in _errors(ws)} == {"timeout"}


def test_retries_exhausted_fail_the_record_and_log_every_attempt(ws: Workspace) -> None:
    ws.fake.configure(fail_matching=[], error_rate=1.0)
    proc = ws.run("--max-retries", "2", "--max-workers", "1", "--limit", "1", env=_fast(ws))
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
    ws.fake.configure(fail_matching=["How large is Fund 00009"])
    assert ws.run(env=_fast(ws)).returncode == 1
    first = ws.fake.stats()["generate"]
    assert first == 80
    ws.fake.configure(fail_matching=[])
    assert ws.run("--retry-failed", env=_fast(ws)).returncode == 0
    assert ws.fake.stats()["generate"] == 81  # stage 1 came from the cache
    assert read_json(ws.checkpoint)["cache_hits"] == 1
    # Each stage-1 prompt reached the stand-in exactly once over both runs.
    stage_one = {h: n for h, n in ws.fake.stats()["by_prompt"].items()}
    assert sum(stage_one.values()) == 81 and sorted(stage_one.values())[-1] == 2  # only the failed one twice
