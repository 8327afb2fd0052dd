"""The GCRA slot arithmetic as values: a schedule, a time and a request in, the wait and the next schedule out."""

from __future__ import annotations

import pytest

from enrichkit.pace.schedule import LATE_SLACK, Schedule


def start(tpm: float | None = None) -> Schedule:
    return Schedule.starting(100.0, window=60.0, tpm=tpm, headroom=1.0)


def test_a_request_reserves_the_next_slot_one_interval_later() -> None:
    s = start().take(100.0, 0, rate=600, head=False)
    assert s.wait(100.05) == (pytest.approx(0.05), True)
    assert s.wait(100.1)[0] <= 0


def test_a_request_goes_at_the_later_of_the_request_and_the_token_slot() -> None:
    s = start(tpm=60_000).take(100.0, 2000, rate=600, head=False)  # 0.1 s per request, 1 ms per token
    assert s.wait(100.0)[0] == pytest.approx(2.0)
    assert s.take(102.0, 0, rate=600, head=True).next_req == pytest.approx(102.1)  # its slot is the token clock's


def test_a_sleeper_that_wakes_late_keeps_the_grid_and_an_idle_pool_starts_afresh() -> None:
    s = start().take(100.0, 0, rate=600, head=False)  # next slot 100.1, slot 0.1 s
    assert s.take(100.15, 0, rate=600, head=True).next_req == pytest.approx(100.2)  # late by half a slot: kept
    assert s.take(100.15, 0, rate=600, head=False).next_req == pytest.approx(100.25)  # not the sleeper: afresh
    assert s.take(100.1 + LATE_SLACK * 0.1 / 2, 0, rate=600, head=False).next_req == pytest.approx(100.2)


def test_a_workers_own_retry_delay_binds_when_later_than_the_grid() -> None:
    s = start().take(100.0, 0, rate=600, head=False)
    assert s.wait(100.0, own=130.0) == (pytest.approx(30.0), False)
    assert s.wait(100.0, own=100.05) == (pytest.approx(0.1), True)


def test_settle_credits_an_over_estimate_but_never_into_the_past() -> None:
    s = start(tpm=6000).take(100.0, 1000, rate=None, head=False)  # 10 s of token time
    assert s.settle(100.0, 1000, 100).next_tok == pytest.approx(101.0)
    assert s.settle(130.0, 1000, 0).next_tok == pytest.approx(110.0)  # the slot is past: no credit to burst on
    assert s.settle(100.0, 100, 1000).next_tok == pytest.approx(119.0)  # an under-estimate is charged


def test_a_pause_is_never_shortened_and_counts_only_the_time_it_adds() -> None:
    s = start().pause(100.0, 105.0).pause(101.0, 103.0)
    assert (s.paused_until, s.paused_total) == (105.0, 5.0)
    s = s.pause(102.0, 107.0)
    assert (s.paused_until, s.paused_total) == (107.0, 7.0)
    assert s.wait(102.0)[0] == pytest.approx(5.0)
    assert s.paused_ahead(106.0) == pytest.approx(1.0)
