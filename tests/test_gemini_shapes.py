"""Every answer shape of the live Gemini API, through the real SDK and the CLI, against the stand-in:
what enrichkit does with each (docs/models-and-prices.md has the table)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Completed, Workspace, make_rows, read_csv, read_json, write_csv
from enrichkit.testing import use
from fake_gemini import FakeGemini, ScaledClock

ROWS = 12


def _speed(speed: float) -> str:
    return f"{speed:g}x"


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeGemini]:
    """The stand-in; on a clock that runs faster for a test that asks (indirect parametrization: its speed),
    shared with the run (`scaled`): the product's own pauses, backoff and breaker then take no real time."""
    with FakeGemini(seed=1, catalogue="2026-05", clock=ScaledClock(getattr(request, "param", 1.0))) as server:
        yield server


@pytest.fixture
def ws(tmp_path: Path, fake: FakeGemini) -> Workspace:
    """The workspace with ROWS records: each shape shows in a few (a test that needs more writes them)."""
    workspace = Workspace(tmp_path, fake)
    write_csv(workspace.input, make_rows(ROWS))
    return workspace


def scaled(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> Completed:
    """The CLI in this process on the stand-in's clock."""
    assert isinstance(ws.fake, FakeGemini)
    with use(clock=ws.fake.clock):
        return ws.run(*args, env=env)


def _fast(ws: Workspace, **extra: str) -> dict[str, str]:
    return ws.env(ENRICHKIT_BACKOFF_BASE="0.01", **extra)


def _errors(ws: Workspace) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ws.errors.read_text().splitlines()] if ws.errors.exists() else []


def _stages(ws: Workspace, body: str) -> None:
    ws.stages.write_text(body, encoding="utf-8")


SEARCH = """
[defaults]
model = "{model}"

[[stages]]
name = "poc"
prompt = "Who is the point of contact of {{fund.title}} ({{fund.manager}})?"
search = true
[stages.fields]
poc_name = "string"
poc_email = {{ type = "string", description = "work e-mail" }}
confidence = {{ type = "number", required = true }}
"""


# --- before record 1 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "words"), [
    ("gemini-2.0-flash", "unknown or retired"), ("gemini-1.5-pro", "unknown or retired"),
    ("gemini-embedding-001", "cannot generate"),
])
def test_a_model_that_cannot_answer_stops_before_record_1_listing_those_that_can(ws: Workspace, model: str,
                                                                                  words: str) -> None:
    ws.stages.write_text(ws.stages.read_text().replace('"gemini-2.5-flash"', f'"{model}"'), encoding="utf-8")
    ws.stages.write_text(ws.stages.read_text() + f'\n[prices."{model}"]\ninput = 1\noutput = 1\n', encoding="utf-8")
    proc = ws.run()
    assert proc.returncode == 2, proc.stderr
    assert model in proc.stderr and words in proc.stderr and "gemini-2.5-flash" in proc.stderr
    assert ws.fake.stats()["generate"] == 0 and not ws.checkpoint.exists()


def test_configuration_errors_the_api_reports_stop_the_run_instead_of_failing_every_record(ws: Workspace) -> None:
    ws.fake.configure(faults={"location_400": 1.0})
    proc = ws.run("--max-workers", "1")
    assert proc.returncode == 2, proc.stderr
    assert "location is not supported" in proc.stderr
    assert ws.fake.stats()["generate"] <= 2 and read_json(ws.checkpoint)["failed_count"] == 0


@pytest.mark.parametrize("fault", ["prepay_429", "spend_cap_429", "limit_zero_429"])
def test_account_429s_stop_at_once_with_a_billing_line_and_resume_later(ws: Workspace, fault: str) -> None:
    ws.fake.configure(faults={fault: 1.0})
    proc = ws.run("--max-workers", "2", env=_fast(ws))
    assert proc.returncode == 1, proc.stderr
    assert "billing" in proc.stderr and "--resume" in proc.stderr
    assert ws.fake.stats()["generate"] <= 3  # not 25 requests over 20 minutes
    assert read_json(ws.checkpoint)["failed_count"] == 0
    ws.fake.configure(faults={})
    assert ws.run("--resume").returncode == 0
    assert len(ws.output_ids()) == ROWS


def test_a_per_day_429_stops_resumably(ws: Workspace) -> None:
    ws.fake.configure(fault_matching={"day_429": ["Fund 00010 "]})
    proc = ws.run("--max-workers", "1", env=_fast(ws))
    assert proc.returncode == 1 and "daily quota" in proc.stderr


def _stop_line(stderr: str, words: str) -> str:
    """The one line that says why the run stopped."""
    lines = [line for line in stderr.splitlines() if line.startswith("Stopped:")]
    assert len(lines) == 1 and words in lines[0], stderr
    return lines[0]


@pytest.mark.parametrize(("fault", "what"), [("help_day_429", "a daily quota is used up"),
                                             ("grounding_day_429", "the daily Search-grounding quota is used up")])
def test_a_used_up_daily_quota_stops_at_once_saying_when_it_resets(ws: Workspace, fault: str, what: str) -> None:
    # A Help link alone (no QuotaFailure, no RetryInfo), or the per-day Search-grounding quota: no wait helps.
    _stages(ws, SEARCH.format(model="gemini-3.5-flash"))
    ws.fake.configure(faults={fault: 1.0})
    proc = ws.run("--max-workers", "2", env=_fast(ws))
    assert proc.returncode == 1, proc.stderr
    line = _stop_line(proc.stderr, what)
    assert "resets at midnight Pacific time" in line and " UTC, in " in line and "--resume" in line
    assert ws.fake.stats()["generate"] <= 3  # not paced and retried 25 times each
    assert read_json(ws.checkpoint)["failed_count"] == 0
    ws.fake.configure(faults={})
    assert ws.run("--resume").returncode == 0 and len(ws.output_ids()) == ROWS


def test_a_spend_cap_429_stops_with_a_billing_line_naming_the_tier_cap(ws: Workspace) -> None:
    ws.fake.configure(faults={"spend_cap_429": 1.0})
    proc = ws.run("--max-workers", "2", env=_fast(ws))
    assert proc.returncode == 1, proc.stderr
    line = _stop_line(proc.stderr, "the monthly spend cap is reached")
    assert "Tier 1: $250" in line and "billing" in line and "--resume" in line


# 100x: a 429 without a delay pauses every worker 2 s.
@pytest.mark.parametrize("fake", [100.0], indirect=True, ids=_speed)
def test_detail_less_429s_and_server_errors_are_retried_to_success(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(40))
    ws.fake.configure(faults={"bare_429": 0.1, "overloaded_503": 0.1, "html_502": 0.05, "internal_500": 0.05},
                      seed=3)
    proc = scaled(ws, "--max-retries", "6", env=_fast(ws))
    assert proc.returncode == 0, proc.stderr
    assert len(set(ws.output_ids())) == 40
    kinds = {e["error_type"] for e in _errors(ws)}
    assert kinds <= {"rate_limit", "server_error"} and "server_error" in kinds


# --- answers that are not JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "tries"), [
    ("blocked", 1), ("prohibited_content", 1), ("blocklist", 1), ("spii", 1), ("safety", 2), ("recitation", 2),
])
def test_blocked_answers_are_their_own_outcome_retried_once_or_never(ws: Workspace, fault: str, tries: int) -> None:
    ws.fake.configure(fault_matching={fault: ["Fund 00003 "]})
    proc = ws.run(env=_fast(ws))
    assert proc.returncode == 1, proc.stderr
    errors = [e for e in _errors(ws) if e["error_type"] == "blocked"]
    assert len(errors) == tries and {e["row"] for e in errors} == {4}
    cp = read_json(ws.checkpoint)
    assert cp["failed_count"] == 1 and cp["completed_count"] == ROWS - 1
    assert read_json(ws.report)["stages"]["poc"]["failed_records"] == {"blocked": 1}
    assert cp["prompt_tokens"] > 0 and cp["cost_usd"] > 0  # the refused prompts were billed, and counted


def test_a_loop_until_max_tokens_is_capped_billed_and_retried_once(ws: Workspace) -> None:
    ws.fake.configure(fault_matching={"max_tokens_loop": ["Fund 00007 "]})
    proc = ws.run(env=_fast(ws))
    assert proc.returncode == 1, proc.stderr
    looped = [e for e in _errors(ws) if e["row"] == 8]
    assert len(looped) == 2 and "max_output_tokens" in looped[0]["message"]
    assert ws.fake.stats()["tokens"]["candidates"] >= 2 * 8000  # capped at 8,192 a try, not 65,535
    report = read_json(ws.report)
    assert report["tokens"]["output"] >= 2 * 8000  # and every token of it is on the bill


def test_max_retries_bounds_the_retries_a_finish_reason_allows(ws: Workspace) -> None:
    # "retried once" is at most once: --max-retries 0 means no paid retry, whatever the failure.
    ws.fake.configure(fault_matching={"max_tokens_loop": ["Fund 00007 "]})
    assert ws.run("--max-retries", "0", env=_fast(ws)).returncode == 1
    assert ws.fake.stats()["faults"]["max_tokens_loop"] == 1
    assert len([e for e in _errors(ws) if e["row"] == 8]) == 1


def test_thoughts_that_use_the_whole_budget_say_what_to_change(ws: Workspace) -> None:
    ws.fake.configure(fault_matching={"max_tokens_thinking": ["Fund 00001 "]})
    assert ws.run(env=_fast(ws)).returncode == 1
    assert any("raise max_output_tokens or lower the thinking budget" in e["message"] for e in _errors(ws))


# --- grounding, sources, structured output, nulls --------------------------------------------------------------


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-flash-preview"])
def test_a_search_stage_writes_its_sources_queries_and_whether_it_was_grounded(ws: Workspace, model: str) -> None:
    _stages(ws, SEARCH.format(model=model))
    write_csv(ws.input, make_rows(12))
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(ws.output)
    assert list(rows[0])[5:11] == ["poc_name", "poc_email", "confidence", "poc_sources", "poc_queries",
                                   "poc_grounded"]
    for row in rows:
        sources = json.loads(row["poc_sources"])
        assert sources and all(s["url"].startswith("https://") and "grounding-api-redirect" not in s["url"]
                               for s in sources)  # resolved to the sources themselves
        assert json.loads(row["poc_queries"]) and row["poc_grounded"] == "true"
    stats = ws.fake.stats()
    assert stats["faults"].get("search_json_400", 0) == 0  # 2.x: the schema went into the prompt, not JSON mode
    assert stats["redirects"] >= 12


def test_2x_grounded_answers_wrapped_in_prose_or_fences_are_read(ws: Workspace) -> None:
    _stages(ws, SEARCH.format(model="gemini-2.5-flash"))
    ws.fake.configure(grounded_wrap="mixed")
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    assert not _errors(ws)


def test_unknown_is_an_answer_an_empty_cell_never_a_retry(ws: Workspace) -> None:
    _stages(ws, SEARCH.format(model="gemini-3-flash-preview"))
    ws.fake.configure(null_rate=0.5, seed=2)
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    assert not _errors(ws)
    rows = read_csv(ws.output)
    assert any(r["poc_email"] == "" for r in rows) and all(r["confidence"] for r in rows)
    fill = read_json(ws.report)["fill_rates"]
    assert fill["poc_email"] < 1.0 and fill["confidence"] == 1.0


# --- cost ----------------------------------------------------------------------------------------------------


def test_cost_is_priced_by_the_model_that_served_the_answer(ws: Workspace) -> None:
    ws.fake.configure(reroute={"gemini-2.5-flash": "gemini-2.5-pro"})
    assert ws.run("--stages", "poc").returncode == 0
    cp = read_json(ws.checkpoint)
    expected = (cp["prompt_tokens"] * 1.25 + cp["output_tokens"] * 10.0) / 1e6  # 2.5 Pro's prices
    assert cp["cost_usd"] == pytest.approx(expected, abs=2e-6)


def test_grounding_fees_are_in_the_cost_and_the_budget(ws: Workspace) -> None:
    _stages(ws, SEARCH.format(model="gemini-2.5-flash"))
    write_csv(ws.input, make_rows(40))  # 30 left after 10: more than $0.50 of grounding fees
    assert ws.run("--limit", "10").returncode == 1
    report = read_json(ws.report)
    assert report["cost"]["grounded_prompts"] == 10
    assert report["cost"]["grounding_usd"] == pytest.approx(10 * 35 / 1000)  # $35 per 1,000 grounded prompts
    assert report["cost_usd"] > report["cost"]["grounding_usd"]
    rows = read_csv(ws.output)
    assert sum(float(r["_cost_usd"]) for r in rows) == pytest.approx(report["cost_usd"], rel=1e-4)
    assert report["stages"]["poc"]["cost_usd"] == pytest.approx(report["cost_usd"], abs=1e-5)  # per stage
    budget = ws.run("--resume", "--max-cost", "0.5")
    assert budget.returncode == 4, budget.stderr  # the fee, not just the tokens, reached the budget
    assert read_json(ws.checkpoint)["cost_usd"] <= 0.5


def test_3x_grounding_is_billed_per_search_query(ws: Workspace) -> None:
    _stages(ws, SEARCH.format(model="gemini-3-flash-preview"))
    assert ws.run("--limit", "5").returncode == 1
    report = read_json(ws.report)
    queries = report["cost"]["search_queries"]
    assert queries >= 5 and report["cost"]["grounding_usd"] == pytest.approx(queries * 14 / 1000)


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-flash-preview"])
def test_a_grounded_answer_that_fails_still_bills_its_search(ws: Workspace, model: str) -> None:
    # A search loop cut at max_output_tokens ran its queries all the same: Google bills them (3.x per query, 2.5
    # per grounded prompt), so the report's grounding must count the failed tries as well as the answers.
    _stages(ws, SEARCH.format(model=model))
    ws.fake.configure(fault_matching={"max_tokens_loop": ["Fund 00003 "]})
    assert ws.run("--limit", "5", env=_fast(ws)).returncode == 1
    stats, report = ws.fake.stats(), read_json(ws.report)
    assert stats["faults"]["max_tokens_loop"] == 2
    if model.startswith("gemini-3"):
        assert report["cost"]["search_queries"] == stats["search_queries"] > 0
        assert report["cost"]["grounding_usd"] == pytest.approx(stats["search_queries"] * 14 / 1000)
    else:
        assert report["cost"]["grounded_prompts"] == stats["grounded"] == 6  # 4 answers + 2 cut tries
        assert report["cost"]["grounding_usd"] == pytest.approx(6 * 35 / 1000)


def test_flex_costs_half_the_tokens(ws: Workspace) -> None:
    ws.stages.write_text(ws.stages.read_text().replace("[defaults]", '[defaults]\nservice_tier = "flex"'),
                         encoding="utf-8")
    assert ws.run("--stages", "poc").returncode == 0
    cp = read_json(ws.checkpoint)
    assert cp["cost_usd"] == pytest.approx((cp["prompt_tokens"] * 0.30 + cp["output_tokens"] * 2.50) / 2e6, abs=2e-6)
    assert ws.fake.stats()["flex"] == ROWS


# --- overload, fallback, environment -----------------------------------------------------------------------


# 10x: the second of overload, the breaker's cool-down and the latency.
@pytest.mark.parametrize("fake", [10.0], indirect=True, ids=_speed)
def test_a_sustained_overload_switches_to_the_fallback_model_and_back(ws: Workspace) -> None:
    ws.stages.write_text(ws.stages.read_text().replace('prompt = "Who is', 'fallback_model = "gemini-2.5-flash-lite"\n'
                                                       'prompt = "Who is'), encoding="utf-8")
    write_csv(ws.input, make_rows(60))
    ws.fake.configure(latency=0.04, fault_matching={"overloaded_503": ["model:gemini-2.5-flash"]})  # overloaded
    done = threading.Event()

    def heal() -> None:  # ... for a second of the stand-in's clock from its first 503
        while not done.is_set() and not ws.fake.stats()["faults"].get("overloaded_503"):
            done.wait(0.005)
        if not done.wait(ws.fake.clock.real(1.0)):
            ws.fake.configure(fault_matching={})

    healer = threading.Thread(target=heal, daemon=True)
    healer.start()
    try:
        proc = scaled(ws, "--max-workers", "2", "--max-retries", "8", env=_fast(ws))
    finally:
        done.set()
        healer.join()
    assert proc.returncode == 0, proc.stderr
    served = ws.fake.stats()["served_by"]
    assert served.get("gemini-2.5-flash-lite", 0) > 0 and served.get("gemini-2.5-flash", 0) > 0
    assert "uses gemini-2.5-flash-lite" in proc.stderr and "is back on it" in proc.stderr
    assert len(set(ws.output_ids())) == 60
    rows = read_csv(ws.output)
    assert all(float(r["_cost_usd"]) > 0 for r in rows)  # priced as the model that served each
    # The same job again from its cache: what the stage's own model answered is reused, what the fallback
    # answered is not taken for the stage model's answer (it is asked again).
    for path in (ws.output, ws.checkpoint, ws.report):
        path.unlink()
    again = scaled(ws, env=_fast(ws))
    assert again.returncode == 0, again.stderr
    served_again = Counter(ws.fake.stats()["served_by"]) - Counter(served)
    assert served_again == {"gemini-2.5-flash": served["gemini-2.5-flash-lite"]}
    assert read_json(ws.checkpoint)["cache_hits"] == served["gemini-2.5-flash"]


def test_the_vertex_environment_variable_does_not_turn_the_client_into_vertex(ws: Workspace) -> None:
    proc = ws.run("--limit", "3", env=ws.env(GOOGLE_GENAI_USE_VERTEXAI="true"))
    assert proc.returncode == 1, proc.stderr


def test_a_504_from_the_servers_own_deadline_is_retried(ws: Workspace) -> None:
    ws.fake.configure(fault_matching={"deadline_504": ["Fund 00002 "]})
    proc = ws.run("--max-retries", "1", env=_fast(ws))
    assert proc.returncode == 1
    assert {e["error_type"] for e in _errors(ws)} == {"server_error"}


def test_a_2x_search_stage_with_nullable_numbers_and_booleans(ws: Workspace) -> None:
    _stages(ws, """
[defaults]
model = "gemini-2.5-flash"

[[stages]]
name = "fund"
prompt = "How large is {fund.title}?"
search = true
[stages.fields]
size_musd = "number"
vintage = "integer"
open = "boolean"
""")
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    assert all(r["size_musd"] for r in read_csv(ws.output))


def test_a_search_stage_answered_from_the_cache_keeps_its_sources(ws: Workspace) -> None:
    _stages(ws, SEARCH.format(model="gemini-3-flash-preview") + """
[[stages]]
name = "size"
prompt = "How large is {fund.title}?"
[stages.fields]
size_musd = "number"
""")
    ws.fake.configure(fail_matching=["How large is Fund 00004?"])
    assert ws.run("--limit", "8", env=_fast(ws)).returncode == 1
    ws.fake.configure(fail_matching=[])
    retried = ws.run("--retry-failed")  # the failure is done; 4 records were never tried: not exit 0
    assert retried.returncode == 1 and f"Not finished: 8 done, {ROWS - 8} not yet tried" in retried.stderr, \
        retried.stderr
    row = next(r for r in read_csv(ws.output) if r["fund.title"] == "Fund 00004")
    assert json.loads(row["poc_sources"]) and row["poc_grounded"] == "true"  # stage 1 came from the cache
