"""The live Gemini API as it stands in December 2026: routed and retired models, dated prices, model facts
checked at start, flex queues, every finish reason. Runs the CLI in-process against the stand-in serving
today's catalogue (deprecated names routed to their successor, with modelStatus), through the real SDK."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from conftest import Workspace, make_rows, read_csv, read_json, write_csv
from enrichkit.config.pricing import load_pricing
from enrichkit.pace.classify import ANSWER_FINISHES, FINISH_REASONS
from enrichkit.providers.gemini import http_options
from fake_gemini import FakeGemini

LLM = """
[defaults]
model = "{model}"
{extra}

[[stages]]
name = "poc"
prompt = "Who is the point of contact of {{fund.title}} ({{fund.manager}})?"
[stages.fields]
poc_name = "string"
confidence = "number"
"""


@pytest.fixture
def today(serve: Callable[..., FakeGemini], tmp_path: Path) -> Callable[..., Workspace]:
    """A workspace whose stand-in serves today's catalogue, with `model` in [defaults] and `extra` lines."""

    def make(model: str = "gemini-3.8-flash", extra: str = "", rows: int = 10, **config: Any) -> Workspace:
        fake = serve(catalogue="2026-12", seed=1, **config)
        ws = Workspace(tmp_path, fake)
        write_csv(ws.input, make_rows(rows))
        ws.stages.write_text(LLM.format(model=model, extra=extra), encoding="utf-8")
        return ws

    return make


def _priced(cp: dict[str, Any], input_price: float, output_price: float) -> float:
    return (cp["prompt_tokens"] * input_price + cp["output_tokens"] * output_price) / 1e6


def _jobs_status(ws: Workspace, *extra: str) -> str:
    from enrichkit.jobs.cli import main
    from fakes import run_cli

    return run_cli(main, ["status", str(ws.checkpoint), *extra], env=ws.env(), cwd=ws.tmp).stdout


# --- 1. never $0, never silent -------------------------------------------------------------------------------


def test_an_answer_from_a_model_with_no_price_is_priced_as_the_model_asked_and_said_once(
        today: Callable[..., Workspace]) -> None:
    ws = today(reroute={"gemini-3.8-flash": "gemini-9-flash"}, date="2026-12-07")
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    cp = read_json(ws.checkpoint)
    assert cp["cost_usd"] > 0 and cp["cost_usd"] == pytest.approx(_priced(cp, 0.75, 3.75), abs=2e-6)
    assert proc.stderr.count("gemini-9-flash") == 1  # once per (asked, served) pair
    assert "answered by gemini-9-flash, which has no price in pricing.toml: priced as the model asked" in proc.stderr
    pair = read_json(ws.report)["models"]["served"]["gemini-3.8-flash -> gemini-9-flash"]
    assert pair["unpriced"] and pair["priced_as"] == "gemini-3.8-flash"
    assert "answered by gemini-9-flash (no price): priced as gemini-3.8-flash" in _jobs_status(ws)
    budget = ws.run("--fresh", "--yes", "--max-cost", "0.00001")
    assert budget.returncode == 4, budget.stderr  # --max-cost sees what those answers cost


def test_a_routed_answer_is_priced_as_the_model_that_served_it_and_said_once(today: Callable[..., Workspace]) -> None:
    ws = today(model="gemini-3.5-flash", rows=6)  # deprecated: Google answers it with gemini-3.6-flash
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    cp = read_json(ws.checkpoint)
    assert cp["cost_usd"] == pytest.approx(_priced(cp, 1.50, 7.50), abs=2e-6)  # 3.6 Flash's prices, not 3.5's
    assert proc.stderr.count("gemini-3.6-flash") == 1  # said once, by the line about the pair
    assert "gemini-3.5-flash was answered by gemini-3.6-flash (Google routes the name there)" in proc.stderr
    assert "model gemini-3.5-flash is deprecated" in proc.stderr
    assert "gemini-3.5-flash -> gemini-3.6-flash" in read_json(ws.report)["models"]["served"]


# --- 2. prices with dates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("day", "prices"), [("2026-12-31", (0.75, 3.75)), ("2027-01-01", (1.50, 7.50))])
def test_an_answer_is_priced_by_the_price_in_force_the_day_it_was_answered(
        today: Callable[..., Workspace], day: str, prices: tuple[float, float]) -> None:
    ws = today(date=f"{day}T12:00:00")  # the stand-in's Date header: when Google answered
    assert ws.run().returncode == 0
    cp = read_json(ws.checkpoint)
    assert cp["cost_usd"] == pytest.approx(_priced(cp, *prices), abs=2e-6)


def test_the_batch_discount_halves_the_tokens_only() -> None:
    pricing = load_pricing()
    on = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    kwargs: dict[str, Any] = {"prompt_tokens": 1_000_000, "output_tokens": 1_000_000, "cached_tokens": 400_000,
                              "grounded": True, "search_queries": 10, "at": on}
    standard = pricing.charge("gemini-3.8-flash", **kwargs)
    batch = pricing.charge("gemini-3.8-flash", batch=True, **kwargs)
    cached = 400_000 * 0.075 / 1e6
    assert batch.tokens - cached == pytest.approx((standard.tokens - cached) / 2)  # cached tokens: standard rate
    assert batch.grounding == standard.grounding == pytest.approx(10 * 14 / 1000)  # grounding: standard rate


def test_dry_run_says_when_prices_were_checked_their_announced_changes_and_the_tier_1_cap(
        today: Callable[..., Workspace]) -> None:
    ws = today(extra='[prices."gemini-3.8-flash"]\ninput = 10000000.0\noutput = 1.0')  # a job above $250
    proc = ws.run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    checked = load_pricing().checked
    assert checked is not None and f"checked against Google's pricing page on {checked.isoformat()}" in proc.stdout
    assert "passes Tier 1's monthly spend cap ($250)" in proc.stdout
    small = today(model="gemini-3.5-flash").run("--dry-run")
    assert "Tier 1" not in small.stdout
    warning = "warning: model gemini-3.5-flash is deprecated, no retirement date announced; Google recommends "
    assert warning + "gemini-3.6-flash" in small.stdout


def test_dry_run_warns_when_the_prices_were_checked_over_60_days_ago(today: Callable[..., Workspace]) -> None:
    from enrichkit.config.plan import RunOptions
    from enrichkit.run.dryrun import dry_run

    ws = today()
    options = RunOptions(input=str(ws.input), output=str(ws.output), stages_file=str(ws.stages))
    checked = load_pricing().checked
    assert checked is not None
    for age, warned in ((60, False), (61, True)):
        out = io.StringIO()
        dry_run(options, out, today=checked + dt.timedelta(days=age))
        assert ("warning: the prices were checked 61 days ago" in out.getvalue()) is warned
    out = io.StringIO()
    dry_run(options, out, today=dt.date(2026, 12, 7))
    assert "gemini-3.8-flash costs $1.50 / $7.50 per 1M tokens from 2027-01-01" in out.getvalue()


# --- 3. one table of finish reasons --------------------------------------------------------------------------


def test_every_finish_reason_of_the_pinned_sdk_has_a_decision() -> None:
    undecided = [r.value for r in types.FinishReason if r.value not in FINISH_REASONS | dict.fromkeys(ANSWER_FINISHES)]
    assert not undecided


@pytest.mark.parametrize(("reason", "requests"), [("TOO_MANY_TOOL_CALLS", 2), ("LANGUAGE", 1),
                                                  ("MALFORMED_RESPONSE", 2), ("A_REASON_FROM_2027", 2)])
def test_a_finish_reason_is_retried_as_the_table_says_not_max_retries_times(
        today: Callable[..., Workspace], reason: str, requests: int) -> None:
    ws = today(rows=1, finish_reason=reason, faults={"finish": 1.0})
    proc = ws.run("--max-retries", "5", env=ws.env(ENRICHKIT_BACKOFF_BASE="0.001"))
    assert proc.returncode == 1, proc.stderr
    assert ws.fake.stats()["generate"] == requests  # each try billed: never more than the table allows
    assert reason in ws.errors.read_text(encoding="utf-8")


def test_an_account_level_finish_stops_the_run_with_a_line_about_the_account(today: Callable[..., Workspace]) -> None:
    ws = today(rows=20, finish_reason="PUP_LIMITED_DISABLED", faults={"finish": 1.0})
    proc = ws.run("--max-workers", "1")
    assert proc.returncode == 1, proc.stderr
    assert "refuses this account (PUP_LIMITED_DISABLED" in proc.stderr
    assert ws.fake.stats()["generate"] <= 2  # at most the records already handed out (2 per worker), not 20
    assert read_json(ws.checkpoint)["failed_count"] == 0  # the records are pending, not failed


# --- 4. flex that waits --------------------------------------------------------------------------------------


def test_a_flex_stage_whose_answers_queue_75_s_completes_with_the_default_flags(
        today: Callable[..., Workspace]) -> None:
    ws = today(extra='service_tier = "flex"', rows=6, flex_latency=75.0, flex_scale=0.0005)
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    assert ws.fake.stats()["faults"].get("deadline_504", 0) == 0 and ws.fake.stats()["flex"] == 6
    assert len(read_csv(ws.output)) == 6


def test_a_stage_timeout_key_is_sent_as_its_deadline(today: Callable[..., Workspace]) -> None:
    ws = today(extra='service_tier = "flex"\ntimeout = 30', rows=2, flex_latency=75.0, flex_scale=0.0005)
    proc = ws.run("--max-retries", "1", env=ws.env(ENRICHKIT_BACKOFF_BASE="0.001"))
    assert proc.returncode == 1  # its own 30 s, shorter than the queue: the stage's key wins over the flex floor
    assert ws.fake.stats()["faults"]["deadline_504"] == 4


def test_flex_shedding_is_retried_and_never_opens_the_breaker(today: Callable[..., Workspace]) -> None:
    ws = today(extra='service_tier = "flex"', rows=1, fault_matching={"flex_503": ["Fund 00000"]})
    proc = ws.run("--max-retries", "6", "--max-outage", "1", env=ws.env(ENRICHKIT_BACKOFF_BASE="0.001"))
    assert proc.returncode == 1, proc.stderr  # the record fails after its retries, the run is never stopped
    assert ws.fake.stats()["generate"] == 7
    assert "circuit breaker open" not in proc.stderr and "--max-outage" not in proc.stderr


# --- 5. lifecycle --------------------------------------------------------------------------------------------


def test_a_deprecated_model_is_warned_about_once_and_listed_in_the_report_and_status(
        today: Callable[..., Workspace]) -> None:
    ws = today(model="gemini-3.6-flash", model_status={"gemini-3.6-flash": "DEPRECATED@2027-02-01T00:00:00Z"})
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("model gemini-3.6-flash is deprecated, retires 2027-02-01") == 1
    assert read_json(ws.report)["models"]["lifecycle"]["gemini-3.6-flash"]["stage"] == "deprecated"
    assert "model gemini-3.6-flash is deprecated, retires 2027-02-01" in _jobs_status(ws)
    assert "model gemini-3.6-flash is deprecated, retires 2027-02-01" in _jobs_status(ws, "--json")  # dashboard


def test_an_answer_saying_its_model_is_retired_stops_the_run_naming_the_replacement(
        today: Callable[..., Workspace]) -> None:
    ws = today(model="gemini-3.5-flash", model_status={"gemini-3.5-flash": "RETIRED"})
    proc = ws.run()
    assert proc.returncode == 2, proc.stderr
    assert "model 'gemini-3.5-flash' was retired: use 'gemini-3.6-flash' instead" in proc.stderr


def test_a_retired_model_stops_before_any_request_naming_the_replacement(today: Callable[..., Workspace]) -> None:
    ws = today(model="gemini-3-pro-preview")
    proc = ws.run()
    assert proc.returncode == 2
    assert "use 'gemini-3.1-pro-preview' instead" in proc.stderr and ws.fake.stats()["generate"] == 0


def test_a_model_closed_to_new_projects_stops_at_record_1_naming_the_replacement(
        today: Callable[..., Workspace]) -> None:
    ws = today(model="gemini-2.5-flash", new_project=True)  # models.get lists it; generateContent says 404
    proc = ws.run()
    assert proc.returncode == 2
    assert "use 'gemini-3.5-flash-lite' instead" in proc.stderr and "no longer available to new users" in proc.stderr
    assert read_json(ws.checkpoint)["failed_count"] == 0


def test_the_shipped_stages_file_and_default_model_are_current() -> None:
    from enrichkit.config.stages import DEFAULT_MODEL, load_stages

    pricing = load_pricing()
    stages = load_stages(Path(__file__).resolve().parents[1] / "data" / "stages.toml")
    for model in [DEFAULT_MODEL, *stages.models(None), *pricing.aliases.values()]:
        assert pricing.facts_of(model).stage not in ("deprecated", "legacy", "retired"), model


# --- 6. capabilities -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "extra", "says"), [
    ("gemini-3.8-flash", 'thinking_level = "minimal"',
     "model 'gemini-3.8-flash' refuses thinking_level = 'minimal': it accepts thinking_level low, medium, high"),
    ("gemini-3.6-flash", "temperature = 0.2", "model 'gemini-3.6-flash' refuses temperature"),
])
def test_a_setting_the_model_refuses_stops_the_run_at_start(today: Callable[..., Workspace], model: str,
                                                            extra: str, says: str) -> None:
    ws = today(model=model, extra=extra)
    proc = ws.run()
    assert proc.returncode == 2 and says in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and ws.fake.stats()["generate"] == 0


# --- the stand-in, through the real SDK ----------------------------------------------------------------------


def _client(fake: FakeGemini) -> genai.Client:
    """A client as enrichkit builds one (v1beta, SDK retries off, the process's one TLS context)."""
    return genai.Client(api_key="k", vertexai=False, http_options=http_options(fake.url, timeout=5))


def test_the_stand_in_routes_deprecated_names_and_says_so_in_model_status(serve: Callable[..., FakeGemini]) -> None:
    client = _client(serve(catalogue="2026-12", date="2027-01-01"))
    answer = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert answer.model_version == "gemini-3.5-flash-lite"
    assert answer.model_status is not None and answer.model_status.model_stage == types.ModelStage.DEPRECATED
    assert answer.model_status.retirement_time == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    headers = answer.sdk_http_response.headers if answer.sdk_http_response else {}
    assert dict(headers or {})["date"] == "Fri, 01 Jan 2027 00:00:00 GMT"
    latest = client.models.generate_content(model="gemini-flash-latest", contents="hi")
    assert latest.model_version == "gemini-3.8-flash" and latest.model_status is None


def test_the_stand_in_refuses_settings_per_model_in_googles_400(serve: Callable[..., FakeGemini]) -> None:
    client = _client(serve(catalogue="2026-12"))
    for model, config in (("gemini-3.8-flash", {"thinking_config": types.ThinkingConfig(
            thinking_level=types.ThinkingLevel.MINIMAL)}), ("gemini-3.6-flash", {"temperature": 0.2})):
        with pytest.raises(errors.APIError) as caught:
            client.models.generate_content(model=model, contents="hi", config=types.GenerateContentConfig(**config))
        assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"


@pytest.mark.parametrize("reason", [r.value for r in types.FinishReason if r.value != "STOP"])
def test_the_stand_in_answers_every_finish_reason(serve: Callable[..., FakeGemini], reason: str) -> None:
    client = _client(serve(finish_reason=reason, faults={"finish": 1.0}))
    answer = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert answer.candidates and answer.candidates[0].finish_reason == types.FinishReason(reason)


def test_the_stand_in_queues_flex_on_a_scaled_clock(serve: Callable[..., FakeGemini]) -> None:
    fake = serve(catalogue="2026-12", flex_latency=75.0, flex_scale=0.0005)
    client = _client(fake)
    config = types.GenerateContentConfig(service_tier=types.ServiceTier.FLEX,
                                         http_options=types.HttpOptions(timeout=60_000))
    with pytest.raises(errors.APIError) as caught:  # asked to answer within 60 s: the queue is longer
        client.models.generate_content(model="gemini-3.8-flash", contents="hi", config=config)
    assert caught.value.code == 504
    config = types.GenerateContentConfig(service_tier=types.ServiceTier.FLEX,
                                         http_options=types.HttpOptions(timeout=900_000))
    assert client.models.generate_content(model="gemini-3.8-flash", contents="hi", config=config).text
    assert json.dumps(fake.stats()["flex"]) == "2"
