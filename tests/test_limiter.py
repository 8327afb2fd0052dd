"""The shared limiter on a fake clock: spacing, tokens, what each kind of 429 does, and the issue's ratios.

The unit tests drive one Limiter by hand (workers named by `worker=`); the simulations
(`quota_sim.py`) run 20 workers through it against sliding- and fixed-window quotas. Simulated runs
are deterministic, so they assert the ratios `make bench` measures on the real CLI. Quotas are per
6 s window here (120 = 1,200 RPM at full scale) so a run fills many windows quickly; one test runs at
full scale.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest

from conftest import ExThread
from enrichkit.pace.limiter import Limiter
from quota_sim import FixedQuota, SlidingQuota, simulate

W, CAP = 6.0, 120  # the simulations' window and quota: 1,200 RPM, ten times faster


class FakeClock:
    """A clock whose sleep advances it and records the wait (tenacity's `sleep=intervals.append`)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.naps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        with self._lock:
            self.naps.append(seconds)
            self.now += seconds


class Pool:
    """One limiter and a fake clock; `as_worker(n)` makes the next calls come from worker n."""

    def __init__(self, rpm: float | None, tpm: float | None = None, **options: Any) -> None:
        self.clock = FakeClock()
        self.me = 0
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.limiter = Limiter(rpm, tpm, clock=self.clock, sleep=self.clock.sleep, worker=lambda: self.me,
                               on_event=lambda name, fields: self.events.append((name, fields)), **options)

    def as_worker(self, n: int) -> Limiter:
        self.me = n
        return self.limiter

    def send(self, worker: int, tokens: int = 0) -> float:
        """Worker `worker` acquires (sleeping on the fake clock as needed); returns when it was let go."""
        assert self.as_worker(worker).acquire(tokens)
        return self.clock.now

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


# --- pacing ----------------------------------------------------------------------------------------


def test_requests_are_spaced_strictly_without_a_burst_at_start() -> None:
    pool = Pool(600, headroom=1.0)
    times = [pool.send(0) for _ in range(6)]
    assert times[0] == 1000.0  # the first goes at once
    assert gaps(times) == [0.1] * 5


def test_the_pace_is_just_under_the_configured_rpm() -> None:
    pool = Pool(600)
    times = [pool.send(0) for _ in range(3)]
    assert gaps(times) == [round(60 / 594, 6)] * 2  # 99 %: room for requests that arrive early or late
    assert pool.limiter.current_rpm == pytest.approx(594)


def test_waits_are_taken_in_naps_of_at_most_max_nap() -> None:
    pool = Pool(6, headroom=1.0)  # one request every 10 s
    pool.send(0)
    pool.send(0)
    assert max(pool.clock.naps) <= 0.25
    assert sum(pool.clock.naps) == pytest.approx(10.0)


def test_tokens_are_paced_by_tpm() -> None:
    pool = Pool(None, tpm=6000, headroom=1.0)  # 1000 tokens occupy 10 s of token time
    times = [pool.send(0, n) for n in (1000, 1000, 10, 10)]
    assert gaps(times) == [10.0, 10.0, 0.1]


def test_the_later_of_request_slot_and_token_slot_wins() -> None:
    pool = Pool(600, tpm=60_000, headroom=1.0)  # 0.1 s per request, 1 ms per token
    times = [pool.send(0, n) for n in (50, 50, 2000, 50)]
    assert gaps(times) == [0.1, 0.1, 2.0]


def test_settle_credits_back_an_over_estimate() -> None:
    pool = Pool(None, tpm=6000, headroom=1.0)
    start = pool.send(0, 1000)
    pool.limiter.settle(1000, 100)  # only 100 used: 1 s of token time, not 10 s
    assert pool.send(0, 10) == pytest.approx(start + 1.0)


def test_settle_charges_an_under_estimate() -> None:
    pool = Pool(None, tpm=6000, headroom=1.0)
    start = pool.send(0, 100)
    pool.limiter.settle(100, 1000)
    assert pool.send(0, 10) == pytest.approx(start + 10.0)


def test_settle_never_credits_into_the_past() -> None:
    pool = Pool(None, tpm=6000, headroom=1.0)
    pool.send(0, 1000)
    pool.clock.now += 30  # the slot is long past; crediting it now must not allow a burst
    pool.limiter.settle(1000, 0)
    assert gaps([pool.send(0, 1000), pool.send(0, 1000)]) == [10.0]


def test_should_stop_aborts_a_wait_without_taking_the_slot() -> None:
    pool = Pool(6, headroom=1.0)  # one request every 10 s
    start = pool.send(0)
    assert not pool.limiter.acquire(0, should_stop=lambda: len(pool.clock.naps) >= 3)
    assert pool.clock.naps == [0.25] * 3
    assert not pool.limiter.acquire(0, should_stop=lambda: True)
    assert pool.send(0) == pytest.approx(start + 10.0)  # the slot is still there for the next caller


def test_no_limits_means_no_pacing() -> None:
    pool = Pool(None)
    for _ in range(100):
        pool.send(0, 10_000)
    assert pool.clock.naps == []
    assert pool.limiter.current_rpm is None


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rpm and tpm"):
        Limiter(0, None)
    with pytest.raises(ValueError, match="rpm and tpm"):
        Limiter(None, -5)
    with pytest.raises(ValueError, match="headroom"):
        Limiter(60, None, headroom=1.5)


def test_threads_sharing_a_limiter_never_share_a_slot() -> None:
    clock = FakeClock()
    limiter = Limiter(600, None, headroom=1.0, clock=clock, sleep=clock.sleep)
    start = clock.now

    def work() -> None:
        for _ in range(25):
            assert limiter.acquire(0)

    threads = [ExThread(work, f"worker-{i}") for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # 200 slots 0.1 s apart: a slot handed out twice would let the fake clock end earlier.
    assert clock.now >= start + 199 * 0.1 - 1e-6


def test_answers_are_matched_to_requests_by_thread() -> None:
    clock = FakeClock()
    limiter = Limiter(60, None, clock=clock, sleep=clock.sleep)
    waits: list[float] = []

    def rejected() -> None:
        assert limiter.acquire(0)
        waits.append(limiter.on_rate_limited(30.0))

    t = ExThread(rejected, "worker")
    t.start()
    t.join(timeout=10)
    assert waits == [30.0]
    assert limiter.acquire(0)  # this thread's own request is not held by the other thread's 429
    assert clock.now < 1030.0


# --- what a 429 does -------------------------------------------------------------------------------


def test_a_lone_429_makes_only_its_own_request_wait_and_keeps_the_pace() -> None:
    pool = Pool(600)  # already paced at the quota: a 429 at a window's edge
    start = pool.send(0)
    assert pool.as_worker(0).on_rate_limited(40.0) == pytest.approx(40.0)
    times = [pool.send(1) for _ in range(3)]
    assert times[-1] < start + 1  # the others keep their pace: no pool pause
    assert pool.limiter.current_rpm == pytest.approx(594)
    assert pool.send(0) == pytest.approx(start + 40.0)  # the one that got it waits its retryDelay
    assert pool.limiter.snapshot()["pauses"] == 0


def test_a_429_without_a_delay_waits_2s() -> None:
    pool = Pool(600)
    start = pool.send(0)
    assert pool.as_worker(0).on_rate_limited(None) == pytest.approx(2.0)
    assert pool.send(0) == pytest.approx(start + 2.0)


def flood(pool: Pool, *, sent: int, rejected: int, delay: float = 5.0, quota: bool | None = None,
          limit: float | None = None) -> None:
    """`sent` requests from as many workers, then the last `rejected` of them answered 429, in order."""
    for w in range(sent):
        pool.send(w)
        pool.clock.now += 0.001
    for w in range(sent):
        pool.clock.now += 0.001
        if w < sent - rejected:
            pool.as_worker(w).on_success()
        else:
            pool.as_worker(w).on_rate_limited(delay, quota=quota, limit=limit)


def test_a_flood_of_429s_while_unpaced_pauses_everyone_and_paces_at_what_the_server_admitted() -> None:
    pool = Pool(None)
    flood(pool, sent=58, rejected=8)  # 50 let through, then a flood
    start = pool.clock.now
    assert pool.limiter.paused_until == pytest.approx(start + 5.0)
    assert pool.limiter.snapshot()["quota_rpm"] == 50  # what the server admitted in the window
    assert pool.limiter.current_rpm == pytest.approx(49.5)
    assert pool.send(99) == pytest.approx(start + 5.0)  # everyone waits out the server's delay
    assert pool.names() == ["pause", "decrease"]
    assert pool.events[0][1]["message"] == "429: pausing all workers for 5 s"


def test_a_few_429s_while_unpaced_only_make_their_requests_wait() -> None:
    pool = Pool(None)
    flood(pool, sent=58, rejected=7)  # below the flood mark: a loaded API, not a quota
    assert pool.limiter.current_rpm is None
    assert pool.limiter.snapshot()["pauses"] == 0
    assert pool.send(99) == pytest.approx(pool.clock.now)


def test_429s_answering_requests_sent_before_a_pause_are_one_event() -> None:
    pool = Pool(None)
    flood(pool, sent=70, rejected=20)
    snap = pool.limiter.snapshot()
    assert (snap["rate_limited"], snap["pauses"], snap["decreases"]) == (20, 1, 1)
    assert pool.limiter.snapshot()["quota_rpm"] == 50


def test_a_429_right_after_a_pause_pauses_again() -> None:
    pool = Pool(None)
    flood(pool, sent=58, rejected=8, delay=5.0)
    t = pool.send(0)  # the first request after the pause
    pool.as_worker(0).on_rate_limited(7.0)  # the pause was too short (a delay that named no slot)
    assert pool.limiter.paused_until == pytest.approx(t + 7.0)
    assert pool.limiter.snapshot()["pauses"] == 2


def test_a_success_after_a_pause_ends_the_check() -> None:
    pool = Pool(None)
    flood(pool, sent=58, rejected=8)
    pool.send(0)
    pool.as_worker(0).on_success()
    pool.send(1)
    pool.as_worker(1).on_rate_limited(7.0)  # now a lone 429
    assert pool.limiter.snapshot()["pauses"] == 1


def test_the_quota_a_429_states_sets_the_pace() -> None:
    pool = Pool(None)
    pool.send(0)
    pool.as_worker(0).on_rate_limited(20.0, quota=True, limit=1000)
    assert pool.limiter.snapshot()["quota_rpm"] == 1000
    assert pool.limiter.current_rpm == pytest.approx(990)


def test_a_stated_quota_never_lifts_the_pace_above_the_configured_rpm() -> None:
    pool = Pool(600)
    pool.send(0)
    pool.as_worker(0).on_rate_limited(20.0, quota=True, limit=1000)
    assert pool.limiter.current_rpm == pytest.approx(594)


def test_429s_that_name_no_quota_never_set_the_pace() -> None:
    pool = Pool(None)
    flood(pool, sent=58, rejected=8, quota=False)  # a loaded API's flood: everyone waits, nothing learnt
    assert pool.limiter.snapshot()["pauses"] == 1
    assert pool.limiter.current_rpm is None


def test_three_429s_in_a_row_at_the_quota_cut_the_pace_and_hold_everyone_briefly() -> None:
    pool = Pool(120, window=6.0)  # 19.8/s
    for _ in range(125):  # a window and more at the pace, all let through
        pool.send(0)
        pool.as_worker(0).on_success()
    for w in range(1, 4):  # then a fixed window's end: used up until it ends
        pool.send(w)
        pool.as_worker(w).on_rate_limited(40.0)
    now = pool.clock.now
    assert pool.limiter.snapshot()["quota_rpm"] == 116  # what the server let through in the window before the run
    assert pool.limiter.paused_until == pytest.approx(now + 0.1)  # window/60, not the 40 s
    assert pool.names() == ["decrease", "hold"]
    t = pool.send(4)
    pool.as_worker(4).on_rate_limited(40.0)  # still used up: hold again, twice as long
    assert pool.limiter.paused_until == pytest.approx(t + 0.2)
    pool.send(5)
    pool.as_worker(5).on_success()  # the window has turned
    assert pool.limiter.snapshot()["holds"] == 2
    assert pool.limiter.snapshot()["pauses"] == 0


# --- learning the quota ------------------------------------------------------------------------------


def test_a_clean_window_raises_the_estimate_and_a_429_after_it_undoes_the_raise() -> None:
    pool = Pool(None, window=6.0)
    flood(pool, sent=108, rejected=8)  # learns 100 per window
    for _ in range(120):  # two windows at the pace, no 429
        w = 0
        pool.send(w)
        pool.as_worker(w).on_success()
    assert pool.limiter.snapshot()["quota_rpm"] == pytest.approx(102)  # +2 %
    assert pool.names()[-1] == "increase"
    assert pool.events[-1][1]["message"] == "pace recovered to 101 per 6 s"
    pool.send(1)
    pool.as_worker(1).on_rate_limited(1.0)
    assert pool.limiter.snapshot()["quota_rpm"] == pytest.approx(100)  # the raise went past the quota


def test_the_estimate_never_rises_above_the_configured_rpm() -> None:
    pool = Pool(600, window=6.0)
    for _ in range(600):
        pool.send(0)
        pool.as_worker(0).on_success()
    assert pool.limiter.snapshot()["quota_rpm"] == 600
    assert pool.limiter.snapshot()["increases"] == 0


def test_events_are_sent_outside_the_lock() -> None:
    clock = FakeClock()
    seen: list[dict[str, Any]] = []
    limiter = Limiter(None, None, clock=clock, sleep=clock.sleep, worker=lambda: 0,
                      on_event=lambda name, fields: seen.append(limiter.snapshot()))  # would deadlock under it
    assert limiter.acquire(0)
    limiter.on_rate_limited(1.0, quota=True, limit=60)
    assert seen and seen[0]["quota_rpm"] == 60


def test_snapshot_reports_configured_and_current_pace_pauses_and_changes() -> None:
    pool = Pool(1200, tpm=100_000)
    flood(pool, sent=30, rejected=8, delay=4.0)  # told too much: a storm
    pool.clock.now += 10
    assert pool.limiter.snapshot() == {
        "rpm": 1200, "tpm": 100_000, "current_rpm": pytest.approx(21.78), "quota_rpm": 22, "window_seconds": 60.0,
        "rate_limited": 8, "pauses": 1, "holds": 0, "paused_seconds": 4.0, "paused_for": 0.0, "decreases": 1,
        "increases": 0}


# --- the cases, simulated -------------------------------------------------------------------


def fixed(delays: str = "exact") -> FixedQuota:
    return FixedQuota(CAP, W, delays, phase=2.3)  # windows do not start with the run


@pytest.mark.parametrize("quota", [SlidingQuota(CAP, W), fixed()], ids=["sliding", "fixed"])
def test_told_the_true_quota_it_runs_at_097_with_at_most_half_a_percent_429s(quota: SlidingQuota) -> None:
    run = simulate(quota, CAP, seconds=20 * W, jitter=0.05)  # a sliding window's edge 429s without headroom
    assert run.ratio >= 0.97
    assert run.share_429_all <= 0.005
    assert run.snapshot["pauses"] == 0


@pytest.mark.parametrize("quota", [SlidingQuota(CAP, W), fixed()], ids=["sliding", "fixed"])
def test_a_client_that_stalls_now_and_then_costs_a_few_429s_never_the_pace(quota: SlidingQuota) -> None:
    # A stall of 0.1 s (a loaded machine; 1 s at full scale) bunches the requests let go meanwhile.
    run = simulate(quota, CAP, seconds=20 * W, jitter=0.02, hiccups=(0.005, 0.1))
    assert run.snapshot["decreases"] == run.snapshot["pauses"] == 0
    assert run.ratio >= 0.97
    assert run.share_429_all <= 0.005


@pytest.mark.parametrize("told", [None, 3 * CAP], ids=["told-nothing", "told-3x"])
@pytest.mark.parametrize("make", [lambda: SlidingQuota(CAP, W), fixed], ids=["sliding", "fixed"])
def test_told_nothing_or_too_much_it_runs_at_095_with_at_most_3_percent_429s_after_two_windows(
        make: Any, told: int | None) -> None:
    run = simulate(make(), told, seconds=20 * W, warmup=2 * W, jitter=0.02)
    assert run.ratio >= 0.95
    assert run.share_429 <= 0.03
    assert run.snapshot["pauses"] <= 2


@pytest.mark.parametrize("told", [None, 3 * CAP], ids=["told-nothing", "told-3x"])
@pytest.mark.parametrize("make", [lambda: SlidingQuota(CAP, W, "google"), lambda: fixed("google")],
                         ids=["sliding", "fixed"])
def test_with_google_like_delays_the_same_after_three_windows(make: Any, told: int | None) -> None:
    run = simulate(make(), told, seconds=20 * W, warmup=3 * W, jitter=0.02)
    assert run.ratio >= 0.95
    assert run.share_429 <= 0.03


@pytest.mark.parametrize("quota", [SlidingQuota(CAP, W, "google"), fixed("google")], ids=["sliding", "fixed"])
def test_edge_429s_with_long_delays_never_pause_the_pool_at_the_quota(quota: SlidingQuota) -> None:
    # Paced at exactly the quota, with network jitter: some requests reach a window's edge and get a
    # 20-60 s (here 2-6 s) retryDelay; only they wait.
    run = simulate(quota, CAP, seconds=20 * W, jitter=0.2, headroom=1.0)
    assert run.rejected >= 5
    assert run.snapshot["pauses"] == 0
    assert run.ratio >= 0.97


def test_at_full_scale_a_minute_window_behaves_the_same() -> None:
    run = simulate(FixedQuota(1200, 60.0, "google", phase=23.0), None, seconds=600, warmup=180, jitter=0.02)
    assert run.ratio >= 0.95
    assert run.share_429 <= 0.03


@pytest.mark.parametrize(("cap", "told"), [(CAP, CAP), (CAP, None), (10**6, None)],
                         ids=["at-the-quota", "told-nothing", "no-quota"])
def test_random_429s_of_a_loaded_api_cost_at_most_15_percent(cap: int, told: int | None) -> None:
    clean = simulate(SlidingQuota(cap, W), told, seconds=20 * W)
    loaded = simulate(SlidingQuota(cap, W), told, seconds=20 * W, noise=0.02)
    assert loaded.share_429_all >= 0.015
    assert loaded.ok >= 0.85 * clean.ok


def test_a_cut_that_does_not_make_429s_rarer_is_undone() -> None:
    # 5 % of answers are 429 whatever the pace, and nothing says so: a cut is tried, judged a window
    # later, and undone; the pace ends where it began.
    clean = simulate(SlidingQuota(CAP, W), CAP, seconds=40 * W)
    loaded = simulate(SlidingQuota(CAP, W), CAP, seconds=40 * W, noise=0.05)
    assert loaded.snapshot["decreases"] >= 1
    assert loaded.snapshot["increases"] == loaded.snapshot["decreases"]
    assert loaded.snapshot["current_rpm"] == clean.snapshot["current_rpm"]
    assert loaded.ok >= 0.9 * clean.ok


def test_an_unpaced_pool_with_random_429s_stays_unpaced() -> None:
    run = simulate(SlidingQuota(10**6, W), None, seconds=20 * W, noise=0.05)  # `make bench` P5's share
    assert run.snapshot["current_rpm"] is None
    assert run.snapshot["pauses"] == 0


def test_random_429s_named_as_such_never_cut_a_known_pace() -> None:
    run = simulate(SlidingQuota(CAP, W), CAP, seconds=20 * W, noise=0.05, tell_quota=True)
    assert run.snapshot["decreases"] == 0
    assert run.snapshot["pauses"] == 0


def test_a_quota_stated_in_the_429_is_learnt_at_once() -> None:
    run = simulate(fixed(), None, seconds=20 * W, warmup=W, tell_quota=True, tell_limit=True)
    first = run.events[0]
    assert (first[1], first[2].get("quota_rpm")) == ("decrease", CAP)  # the first 429 sets it: no flood, no pause
    assert run.snapshot["pauses"] == 0
    assert run.snapshot["quota_rpm"] == CAP
    assert run.ratio >= 0.97


class ChangingQuota(SlidingQuota):
    """A sliding-window quota of `caps[i][1]` from time `caps[i][0]` on (a quota cut for a while, then back)."""

    def __init__(self, caps: list[tuple[float, int]]) -> None:
        super().__init__(caps[0][1], W)
        self.caps = caps

    def admit(self, t: float) -> float | None:
        self.cap = next(cap for start, cap in reversed(self.caps) if t >= start)
        return super().admit(t)


def test_a_pace_cut_to_a_stated_quota_rises_again_when_the_quota_comes_back() -> None:
    # The quota drops to half for 10 windows, and its 429s say so (QuotaFailure quotaValue); then it is back.
    run = simulate(ChangingQuota([(0, CAP // 2), (10 * W, CAP)]), CAP, seconds=60 * W, warmup=40 * W,
                   tell_quota=True, tell_limit=True)
    assert run.snapshot["decreases"] >= 1
    assert run.snapshot["quota_rpm"] >= 0.95 * CAP
    assert run.ratio >= 0.9  # over the last 20 windows


def test_a_stated_quota_that_holds_is_probed_ever_less_often() -> None:
    # Probes after 5, 10, 20, 40 ... windows (the stated quota held each time): four fit in 90 windows.
    run = simulate(SlidingQuota(CAP, W), 3 * CAP, seconds=90 * W, warmup=W, tell_quota=True, tell_limit=True)
    probes = [at for at, name, _ in run.events if name == "increase"]
    assert len(probes) >= 4
    assert all(later > 1.5 * sooner for sooner, later in itertools.pairwise(gaps(probes)))
    assert run.ratio >= 0.97
    assert run.share_429 <= 0.005


# --- 429s that name no quota (issue 14: only RetryInfo, or nothing at all) -----------------------------------

Q300 = 30  # 300 RPM, per 6 s window


@pytest.mark.parametrize("bare", [False, True], ids=["retry-info-only", "no-details"])
@pytest.mark.parametrize("told", [None, 3 * Q300], ids=["told-nothing", "told-900"])
@pytest.mark.parametrize("make", [lambda: SlidingQuota(Q300, W), lambda: FixedQuota(Q300, W, phase=2.3)],
                         ids=["sliding", "fixed"])
def test_a_flood_of_429s_naming_no_quota_brings_the_pace_to_what_got_through(make: Any, told: int | None,
                                                                             bare: bool) -> None:
    run = simulate(make(), told, seconds=20 * W, warmup=2 * W, jitter=0.02, bare=bare)
    assert run.rejected >= 10  # the flood happened
    assert run.ratio >= 0.95
    assert run.share_429 <= 0.03


@pytest.mark.parametrize("bare", [False, True], ids=["retry-info-only", "no-details"])
def test_at_full_scale_300_rpm_told_900_the_same(bare: bool) -> None:
    run = simulate(FixedQuota(300, 60.0, "google", phase=23.0), 900, seconds=900, warmup=120, jitter=0.02, bare=bare)
    assert run.ratio >= 0.95
    assert run.share_429 <= 0.03


@pytest.mark.parametrize("cap", [Q300, CAP])
def test_a_5_percent_sprinkle_of_random_429s_keeps_the_pace_of_a_fault_free_run(cap: int) -> None:
    # Random 429s say no more than a quota's (RetryInfo only): the pace never ratchets down. Each of them
    # spends a slot of the quota, so the measure is what the pace lets through, answered 200 or 429.
    clean = simulate(SlidingQuota(cap, W), cap, seconds=20 * W)
    loaded = simulate(SlidingQuota(cap, W), cap, seconds=20 * W, noise=0.05)
    assert loaded.share_429_all >= 0.04
    assert loaded.ok + loaded.rejected >= 0.95 * (clean.ok + clean.rejected)
    assert loaded.snapshot["current_rpm"] == clean.snapshot["current_rpm"]
