"""--max-cost: every paid call reserves its worst case before it goes, so nothing the budget does not cover is sent
(a runaway answer in flight included), and a bare --resume after the budget stop sends nothing."""

from __future__ import annotations

import datetime as dt
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
    assert run.result.verdict.exit_code == 0, run.result.verdict.message
    assert run.job.store.cp.totals.cost_usd <= 0.0135


def test_a_request_given_up_at_its_deadline_counts_against_the_budget_in_later_runs_too(tmp_path: Path) -> None:
    """Google may still answer and bill a request given up at --timeout: its reservation ($0.004) stays spent for the
    job, not only for the run, so a resume cannot spend it again (before: the next run began at the shown $0 and
    spent $0.003 more, $0.007 in all against a $0.0065 budget)."""
    from enrichkit.pace.deadline import DeadlineExceeded

    input_path = write_csv(tmp_path / "in.csv", make_rows(10))
    stages = tmp_path / "stages.toml"
    stages.write_text('[[stages]]\nname = "a"\nprompt = "{fund.title}"\n[stages.fields]\nx = "string"\n',
                      encoding="utf-8")
    hung = FakeProvider(worst_cost=0.004, outcomes={"Fund 00000": [DeadlineExceeded("no complete answer")]})
    first = run_library(input_path, tmp_path / "out.csv", stages, {"llm": hung}, max_cost=0.0065, max_workers=1,
                        max_retries=0, limit=1)
    assert first.job.store.cp.failed_count == 1 and first.job.store.cp.totals.cost_usd == 0
    again = FakeProvider(worst_cost=0.004)
    second = run_library(input_path, tmp_path / "out.csv", stages, {"llm": again}, max_cost=0.0065, max_workers=1,
                         resume=True)
    assert second.result.verdict.exit_code == 4, second.result.verdict.message
    assert second.job.store.cp.totals.cost_usd + 0.004 <= 0.0065  # what is shown + what Google may bill
    assert again.calls == []
    assert "given up at their deadline" in second.result.verdict.message


def test_a_request_left_on_the_wire_at_exit_counts_against_the_budget_in_later_runs(tmp_path: Path) -> None:
    """Ctrl+C twice: the run leaves while a call is on the wire. Google may answer and bill it after the process is
    gone, so its reservation stays spent for the job (before: forgotten, and the next run spent it again)."""
    import threading

    from enrichkit.run.stopping import StopSignal

    input_path = write_csv(tmp_path / "in.csv", make_rows(10))
    stages = tmp_path / "stages.toml"
    stages.write_text('[[stages]]\nname = "a"\nprompt = "{fund.title}"\n[stages.fields]\nx = "string"\n',
                      encoding="utf-8")
    stop, release = StopSignal(), threading.Event()

    def on_the_wire(_request: object) -> None:
        stop.interrupt("SIGINT")
        stop.interrupt("SIGINT")  # again: leave at once
        release.wait(30)

    slow = FakeProvider(worst_cost=0.004, on_call=on_the_wire)
    try:
        first = run_library(input_path, tmp_path / "out.csv", stages, {"llm": slow}, stop=stop, max_cost=0.0065,
                            max_workers=1)
    finally:
        release.set()
    assert first.result.abandoned >= 1
    assert read_json(tmp_path / "out.progress.json")["unsettled_usd"] == 0.004
    assert read_json(tmp_path / "out.report.json")["cost"]["unsettled_usd"] == 0.004  # shown beside the cost
    again = FakeProvider(worst_cost=0.004)
    second = run_library(input_path, tmp_path / "out.csv", stages, {"llm": again}, max_cost=0.0065, max_workers=1,
                         resume=True)
    assert second.result.verdict.exit_code == 4 and again.calls == []


def test_a_call_on_the_eve_of_a_price_rise_reserves_the_new_price(tmp_path: Path) -> None:
    """3.8 Flash doubles on 2027-01-01: a call sent on 2026-12-31 may be answered, and priced, after midnight, so
    its reservation is at the new price (before: at the old one, and an answer could cost twice what it held)."""
    from enrichkit.config.pricing import load_pricing
    from enrichkit.config.stages import load_stages
    from enrichkit.pace.budget import worst_case
    from enrichkit.providers.gemini import build_request

    stages = tmp_path / "stages.toml"
    stages.write_text('[defaults]\nmodel = "gemini-3.8-flash"\nmax_output_tokens = 1000\n[[stages]]\nname = "a"\n'
                      'prompt = "{x}"\n[stages.fields]\ny = "string"\n', encoding="utf-8")
    stage = load_stages(stages).stages[0]
    pricing = load_pricing()
    request = build_request(stage, "hello", "gemini-3.8-flash")
    december, eve = (worst_case(pricing, request, dt.date(2026, 12, day)) for day in (1, 31))
    january = worst_case(pricing, request, dt.date(2027, 1, 1))
    assert eve == january > december
    assert january >= 1000 * 7.50 / 1e6  # every output token at January's price


def test_a_cost_that_is_not_a_number_stops_on_the_budget_rather_than_waiting_forever(tmp_path: Path) -> None:
    """A checkpoint edited to cost NaN: every comparison with it is false, so a call neither fit nor was refused and
    waited for room forever. It is refused (exit 4), nothing is sent."""
    import json
    import threading

    from enrichkit.run.stopping import StopSignal

    input_path = write_csv(tmp_path / "in.csv", make_rows(10))
    stages = tmp_path / "stages.toml"
    stages.write_text('[[stages]]\nname = "a"\nprompt = "{fund.title}"\n[stages.fields]\nx = "string"\n',
                      encoding="utf-8")
    run_library(input_path, tmp_path / "out.csv", stages, {"llm": FakeProvider()}, limit=2)
    checkpoint = tmp_path / "out.progress.json"
    data = json.loads(checkpoint.read_text(encoding="utf-8"))
    data["token_cost_usd"] = float("nan")
    checkpoint.write_text(json.dumps(data), encoding="utf-8")
    provider, stop, box = FakeProvider(worst_cost=0.004), StopSignal(), {}
    worker = threading.Thread(target=lambda: box.update(run=run_library(
        input_path, tmp_path / "out.csv", stages, {"llm": provider}, stop=stop, max_cost=1.0, resume=True)))
    worker.start()
    worker.join(20)
    hung = worker.is_alive()
    stop.abandon()  # let a hung run go
    worker.join(20)
    assert not hung
    assert box["run"].result.verdict.exit_code == 4 and provider.calls == []


def test_a_deprecated_model_reserves_what_its_replacement_may_bill(tmp_path: Path) -> None:
    """2.5 Flash is served by 3.5 Flash-Lite since 2026-12-01, which bills Search per query ($14 per 1,000, up to 10
    reserved) rather than per prompt ($35 per 1,000): a search call's reservation covers the served model's fee."""
    from enrichkit.config.pricing import load_pricing
    from enrichkit.config.stages import load_stages
    from enrichkit.pace.budget import worst_case
    from enrichkit.providers.gemini import build_request

    stages = tmp_path / "stages.toml"
    stages.write_text('[defaults]\nmax_output_tokens = 1000\n[[stages]]\nname = "a"\nprompt = "{x}"\nsearch = true\n'
                      '[stages.fields]\ny = "string"\n', encoding="utf-8")
    stage = load_stages(stages).stages[0]
    pricing = load_pricing()
    day = dt.date(2026, 12, 7)
    asked = worst_case(pricing, build_request(stage, "hello", "gemini-2.5-flash"), day)
    assert asked > 10 * 14 / 1000 + 1000 * 2.50 / 1e6  # 10 queries and every output token at 3.5 Flash-Lite's
