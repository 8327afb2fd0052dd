"""--max-cost: every paid call reserves its worst case before it goes, so nothing the budget does not cover is sent
(a runaway answer in flight included), and a bare --resume after the budget stop sends nothing."""

from __future__ import annotations

from pathlib import Path

from conftest import Workspace, expected_ids, make_rows, read_csv, read_json, write_csv
from fakes import FakeProvider, run_library

# max_output_tokens 2000 on gemini-2.5-flash: a call's worst case is about $0.0055 (2000 x $2.50/M and the input).
SMALL_OUTPUT = "max_output_tokens = 2000\n"


def _small_output(ws: Workspace) -> None:
    ws.stages.write_text(ws.stages.read_text().replace("temperature = 0.2\n", "temperature = 0.2\n" + SMALL_OUTPUT),
                         encoding="utf-8")


def test_runaway_answers_in_flight_never_take_the_job_past_its_budget(ws: Workspace) -> None:
    _small_output(ws)
    # Records 10..19 loop until MAX_TOKENS: each such answer bills all 2000 output tokens (~$0.005), twenty times a
    # normal answer. Before, a cheap first record let twenty of them go out at once.
    ws.fake.configure(fault_matching={"max_tokens_loop": ["Fund 0001"]})
    proc = ws.run("--max-cost", "0.02", "--max-workers", "10", env=ws.env(ENRICHKIT_BACKOFF_BASE="0.01"))
    assert proc.returncode == 4, proc.stderr
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "budget_exhausted"
    assert cp["cost_usd"] <= 0.02, cp["cost_usd"]
    assert "the next call could cost up to $0.005" in proc.stderr


def test_a_bare_resume_after_the_budget_stop_sends_nothing(ws: Workspace) -> None:
    _small_output(ws)
    first = ws.run("--max-cost", "0.01", "--max-workers", "4")
    assert first.returncode == 4, first.stderr
    spent = read_json(ws.checkpoint)["cost_usd"]
    assert 0 < spent <= 0.01
    sent = ws.fake.stats()["generate"]
    for _tick in range(3):  # cron: the same line again and again
        again = ws.run("--resume")
        assert again.returncode == 4, again.stderr
        assert "Budget reached" in again.stderr
    assert ws.fake.stats()["generate"] == sent  # not one more request, not one more cent
    assert read_json(ws.checkpoint)["cost_usd"] == spent
    more = ws.run("--resume", "--max-cost", "5")  # raised: the job goes on and ends done, each record once
    assert more.returncode == 0, more.stderr
    ids = [row["_record_id"] for row in read_csv(ws.output)]
    assert len(ids) == len(set(ids)) and set(ids) == expected_ids(ws)


def test_a_call_waits_for_room_the_calls_in_flight_hold_rather_than_stopping(tmp_path: Path) -> None:
    """Worst case $0.004 a call, $0.001 really spent: with 8 workers and a $0.0135 budget, the job still does all
    ten records (calls wait while the ones in flight hold the room, and go once they are settled)."""
    input_path = write_csv(tmp_path / "in.csv", make_rows(10))
    stages = tmp_path / "stages.toml"
    stages.write_text('[[stages]]\nname = "a"\nprompt = "{fund.title}"\n[stages.fields]\nx = "string"\n',
                      encoding="utf-8")
    run = run_library(input_path, tmp_path / "out.csv", stages, {"llm": FakeProvider(worst_cost=0.004)},
                      max_cost=0.0135, max_workers=8)
    assert run.result.outcome.exit_code == 0, run.result.outcome.message
    assert run.job.store.cp.totals.cost_usd <= 0.0135
