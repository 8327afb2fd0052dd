"""Against a quota: 429s pause every worker and never fail a record; quota and outages stop resumably.

The stand-in and the run share one clock that runs SPEED times faster than real time (`ScaledClock`): Google's
60 s quota window, the retry delays its 429s name, the pauses and the circuit breaker are the product's own
(the backoff is short, as before), and a minute takes a fraction of a second."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import Completed, Workspace, exactly_once, make_rows, read_json, write_csv
from enrichkit.testing import use
from fake_gemini import FakeGemini, ScaledClock

SPEED = 240.0  # a 60 s window in 0.25 s


def _speed(speed: float) -> str:
    return f"{speed:g}x"


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeGemini]:
    """The stand-in on a clock SPEED times faster (or the speed a test asks for: indirect parametrization)."""
    with FakeGemini(seed=1, catalogue="2026-05", clock=ScaledClock(getattr(request, "param", SPEED))) as server:
        yield server


def run(ws: Workspace, *args: str) -> Completed:
    """The CLI in this process on the stand-in's clock, with short backoffs (a retry does not outwait an outage)."""
    assert isinstance(ws.fake, FakeGemini)
    with use(clock=ws.fake.clock):
        return ws.run(*args, env=ws.env(ENRICHKIT_BACKOFF_BASE="0.01"))


# Twice SPEED: what it asserts (no failure, bounded waste) does not hang on where a window ends.
@pytest.mark.parametrize("fake", [2 * SPEED], indirect=True, ids=_speed)
def test_429_storm_with_retry_delay_fails_no_record(ws: Workspace) -> None:
    # 5 requests per minute, hammered by 10 workers that were told no rpm at all.
    write_csv(ws.input, make_rows(40))
    ws.fake.configure(rpm=5, rpm_delay="precise")
    proc = run(ws, "--max-workers", "10", "--max-retries", "0")
    assert proc.returncode == 0, proc.stderr
    exactly_once(ws, filled=None)
    cp = read_json(ws.checkpoint)
    assert cp["failed_count"] == 0
    assert cp["rate_limited"] > 0  # the storm happened; with --max-retries 0, any counted 429 would fail a record
    # The pause honoured by every worker and the adapted pace keep waste bounded.
    assert ws.fake.stats()["generate"] <= 40 * 2


def test_pacing_at_the_quota_avoids_429s(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(30))
    ws.fake.configure(rpm=10, rpm_delay="precise")  # 10 a minute
    proc = run(ws, "--max-workers", "10", "--rpm", "9")
    assert proc.returncode == 0, proc.stderr
    exactly_once(ws, filled=None)
    assert read_json(ws.checkpoint)["rate_limited"] <= 3


def test_random_429s_with_retry_delay_are_absorbed(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(20))
    ws.fake.configure(rate_limit_rate=0.15, seed=4)
    proc = run(ws, "--max-workers", "8", "--max-retries", "0")
    assert proc.returncode == 0, proc.stderr
    exactly_once(ws, filled=None)
    assert read_json(ws.checkpoint)["rate_limited"] > 0


def test_daily_quota_stops_resumably_then_resume_completes(ws: Workspace) -> None:
    ws.fake.configure(daily_quota=15)
    proc = run(ws, "--max-workers", "2")
    assert proc.returncode == 1, proc.stderr
    assert "daily quota" in proc.stderr and "--resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "interrupted"
    assert cp["failed_count"] == 0
    assert cp["completed_count"] == ws.fake.stats()["answered"] >= 15  # every answer paid for was written
    ws.fake.configure(daily_quota=None)  # the quota resets
    resumed = run(ws, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    exactly_once(ws, filled=None)


# 30x: a request's real milliseconds stay short next to the 2 s outage and the breaker's cool-down.
@pytest.mark.parametrize("fake", [30.0], indirect=True, ids=_speed)
def test_outage_opens_the_breaker_and_the_run_recovers(ws: Workspace) -> None:
    ws.fake.configure(outage=2.0, outage_after=10)
    proc = run(ws, "--max-workers", "4", "--max-retries", "3")
    assert proc.returncode == 0, proc.stderr
    exactly_once(ws, filled=None)
    # The breaker stopped the flood: a few failures open it, then one probe per cool-down.
    assert ws.fake.stats()["faults"]["outage"] <= 15


def test_outage_longer_than_max_outage_stops_resumably(ws: Workspace) -> None:
    ws.fake.configure(outage=600, outage_after=5)
    proc = run(ws, "--max-workers", "2", "--max-outage", "1")
    assert proc.returncode == 1, proc.stderr
    assert "--max-outage" in proc.stderr and "--resume" in proc.stderr
    assert read_json(ws.checkpoint)["status"] == "interrupted"
    ws.fake.configure(outage=0)
    resumed = run(ws, "--resume")
    failed = read_json(ws.checkpoint)["failed_count"]
    # The exit code is the truth: 1 exactly when records failed during the outage (they wait for --retry-failed).
    assert resumed.returncode == (1 if failed else 0), resumed.stderr
    assert read_json(ws.checkpoint)["completed_count"] + failed == 40
    if failed:
        assert "--retry-failed" in resumed.stderr
        assert run(ws, "--retry-failed").returncode == 0
    exactly_once(ws, filled=None)


@pytest.mark.parametrize("shape", ["retry_info", "bare"])
def test_a_flood_of_429s_that_name_no_quota_brings_the_pace_down_to_what_got_through(ws: Workspace,
                                                                                     shape: str) -> None:
    # 5 requests per minute; its 429s carry only RetryInfo, or nothing at all. Told 3x the quota.
    write_csv(ws.input, make_rows(40))
    ws.fake.configure(rpm=5, rpm_delay="precise", quota_429=shape)
    proc = run(ws, "--max-workers", "10", "--rpm", "15")
    assert proc.returncode == 0, proc.stderr
    exactly_once(ws, filled=None)
    assert read_json(ws.checkpoint)["rate_limited"] > 0
    pace = next(iter(read_json(ws.output.with_suffix(".report.json"))["pace"].values()))
    assert pace["window_seconds"] == 60  # Google's minute, on the shared clock
    assert pace["decreases"] >= 1 and pace["current_rpm"] <= 5 * 1.1  # not the 15 it was told
