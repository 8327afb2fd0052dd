"""One stage-totals type for the run and the job, kept in the checkpoint in the format it always had; an answer's
`Usage` is counters (with its model), added to a record's as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enrichkit.providers.base import Usage
from enrichkit.run.counters import Counters, StageTable
from enrichkit.store.checkpoint import Checkpoint, read_checkpoint, write_checkpoint

OLD = {"poc": {"succeeded": 3, "skipped": 1, "failed_records": {"client_error": 1},
               "attempt_errors": {"rate_limit": 2}, "cost_usd": 0.0123},
       "domain": {"succeeded": 2, "skipped": 0, "failed_records": {}, "attempt_errors": {}}}


def test_stage_totals_of_an_older_checkpoint_load_and_are_written_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "job.progress.json"
    cp = Checkpoint(job_id="j", output="o.csv", input={}, stages=["poc", "domain"], config_fingerprint="f",
                    stage_totals=StageTable.from_json(OLD))
    write_checkpoint(path, cp)
    assert json.loads(path.read_text())["stage_totals"] == OLD
    again = read_checkpoint(path)
    assert again.stage_totals["poc"].attempt_errors == {"rate_limit": 2}
    assert again.stage_totals.to_json() == OLD


def test_a_record_books_its_stages_their_cost_and_its_failure() -> None:
    table = StageTable()
    table.add_record([("find", 0.5)], ["fill"], {"find": 0.001, "judge": 0.002}, "judge", "client_error")
    table.add_record([("find", 0.25)], [], {"find": 0.001}, None, None)
    table.add_attempt_error("judge", "rate_limit")
    assert table.to_json() == {
        "find": {"succeeded": 2, "skipped": 0, "failed_records": {}, "attempt_errors": {}, "cost_usd": 0.002},
        "fill": {"succeeded": 0, "skipped": 1, "failed_records": {}, "attempt_errors": {}},
        "judge": {"succeeded": 0, "skipped": 0, "failed_records": {"client_error": 1},
                  "attempt_errors": {"rate_limit": 1}, "cost_usd": 0.002}}
    assert table["find"].latencies == []  # the job's figures keep no call times


def test_a_run_samples_the_call_times_of_its_stages() -> None:
    import random

    table, sample = StageTable(), random.Random(0)
    for ms in range(1, 101):
        table.add_record([("find", ms / 1000)], [], {}, None, None, sample=sample)
    assert table["find"].latency_ms() == {"p50": 51.0, "p90": 91.0, "p99": 100.0, "max": 100.0}


def test_an_answers_usage_is_added_to_a_records_counters_as_it_is() -> None:
    usage = Usage(model="m", prompt_tokens=10, output_tokens=5, grounded_prompts=1, search_queries=2,
                  token_cost_usd=0.001, grounding_cost_usd=0.035)
    record = Counters(requests=1)
    record.add(usage)
    assert (record.requests, record.total_tokens, record.grounded_prompts, record.search_queries) == (1, 15, 1, 2)
    assert record.cost_usd == usage.cost_usd == pytest.approx(0.036)
    assert usage.grounded and not Usage(model="m").grounded
    assert "model" not in Counters.to_json(usage)  # the job's totals keep counters, never a model
