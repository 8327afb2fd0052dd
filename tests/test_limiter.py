"""The shared limiter: strict spacing, token pacing, 429 pauses and AIMD, on a fake clock (no real sleeps)."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import threading
from collections import deque

import pytest

from conftest import ExThread
from enrichkit.limiter import Limiter


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


def make(rpm: float | None, tpm: float | None = None) -> tuple[Limiter, FakeClock]:
    clock = FakeClock()
    return Limiter(rpm, tpm, clock=clock, sleep=clock.sleep), clock


def acquire_times(limiter: Limiter, clock: FakeClock, tokens: list[int]) -> list[float]:
    times = []
    for n in tokens:
        assert limiter.acquire(n)
        times.append(clock.now)
    return times


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


def test_requests_are_spaced_strictly_without_a_burst_at_start() -> None:
    limiter, clock = make(600)
    times = acquire_times(limiter, clock, [0] * 6)
    assert times[0] == 1000.0  # the first goes at once
    assert gaps(times) == [0.1] * 5


def test_waits_are_taken_in_naps_of_at_most_max_nap() -> None:
    limiter, clock = make(6)  # one request every 10 s
    acquire_times(limiter, clock, [0, 0])
    assert max(clock.naps) <= 0.25
    assert sum(clock.naps) == pytest.approx(10.0)


def test_tokens_are_paced_by_tpm() -> None:
    limiter, clock = make(None, tpm=6000)  # 1000 tokens occupy 10 s of token time
    times = acquire_times(limiter, clock, [1000, 1000, 10, 10])
    assert gaps(times) == [10.0, 10.0, 0.1]


def test_the_later_of_request_slot_and_token_slot_wins() -> None:
    limiter, clock = make(600, tpm=60_000)  # 0.1 s per request, 1 ms per token
    times = acquire_times(limiter, clock, [50, 50, 2000, 50])
    assert gaps(times) == [0.1, 0.1, 2.0]


def test_settle_credits_back_an_over_estimate() -> None:
    limiter, clock = make(None, tpm=6000)
    start = clock.now
    assert limiter.acquire(1000)
    limiter.settle(1000, 100)  # only 100 used: 1 s of token time, not 10 s
    assert limiter.acquire(10)
    assert clock.now == pytest.approx(start + 1.0)


def test_settle_charges_an_under_estimate() -> None:
    limiter, clock = make(None, tpm=6000)
    start = clock.now
    assert limiter.acquire(100)
    limiter.settle(100, 1000)
    assert limiter.acquire(10)
    assert clock.now == pytest.approx(start + 10.0)


def test_settle_never_credits_into_the_past() -> None:
    limiter, clock = make(None, tpm=6000)
    assert limiter.acquire(1000)
    clock.now += 30  # the slot is long past; crediting it now must not allow a burst
    limiter.settle(1000, 0)
    times = acquire_times(limiter, clock, [1000, 1000])
    assert gaps(times) == [10.0]


def test_a_429_pauses_callers_that_were_already_waiting() -> None:
    clock = FakeClock()
    hit = []

    def sleep(seconds: float) -> None:
        if not hit:  # another worker's 429 arrives while this one waits for its slot
            hit.append(clock.now)
            limiter.on_rate_limited(5.0)
        clock.sleep(seconds)

    limiter = Limiter(600, None, clock=clock, sleep=sleep)
    start = clock.now
    assert limiter.acquire(0)
    assert limiter.acquire(0)  # had computed a 0.1 s wait
    assert hit == [start]
    assert clock.now == pytest.approx(start + 5.0)
    assert limiter.paused_until == pytest.approx(start + 5.0)


def test_a_pause_is_never_shortened_by_a_smaller_retry_after() -> None:
    limiter, clock = make(None)
    start = clock.now
    limiter.on_rate_limited(10.0)
    clock.now += 0.5
    limiter.on_rate_limited(1.0)
    assert limiter.paused_until == start + 10.0
    assert limiter.acquire(0)
    assert clock.now == pytest.approx(start + 10.0)


def test_a_429_without_delay_pauses_2s_and_longer_when_that_was_too_short() -> None:
    limiter, clock = make(None)
    start = clock.now
    limiter.on_rate_limited(None)
    assert limiter.paused_until == start + 2.0
    clock.now = start + 2.5  # right after the pause: it was too short
    limiter.on_rate_limited(None)
    assert limiter.paused_until == start + 2.5 + 4.0
    clock.now = start + 100  # much later: a new, unrelated 429
    limiter.on_rate_limited(None)
    assert limiter.paused_until == start + 102.0


def test_a_429_slows_the_pace_then_successes_restore_the_configured_rpm() -> None:
    limiter, clock = make(600)
    limiter.on_rate_limited(1.0)
    assert limiter.current_rpm == pytest.approx(420)  # 600 * 0.7
    limiter.on_success()  # answered during the pause: sent before it, says nothing
    assert limiter.current_rpm == pytest.approx(420)
    clock.now += 1.0
    rates = []
    for _ in range(16):
        limiter.on_success()
        rates.append(limiter.current_rpm)
    # 600/50 = 12 rpm a success: back in 15, and never above the configured rate.
    assert rates == pytest.approx([420 + 12 * n for n in range(1, 16)] + [600])
    times = acquire_times(limiter, clock, [0, 0, 0])
    assert gaps(times) == [0.1, 0.1]


def test_the_slower_pace_spaces_requests_wider() -> None:
    limiter, clock = make(600)
    limiter.on_rate_limited(0.0)
    times = acquire_times(limiter, clock, [0, 0])
    assert gaps(times) == [round(60 / 420, 6)]


def test_429s_within_one_pause_are_one_decrease() -> None:
    limiter, clock = make(600)
    limiter.on_rate_limited(5.0)
    for _ in range(4):  # the other workers' requests, already in flight
        clock.now += 0.3
        limiter.on_rate_limited(5.0)
    assert limiter.current_rpm == pytest.approx(420)
    snap = limiter.snapshot()
    assert (snap["rate_limited"], snap["pauses"], snap["decreases"]) == (5, 1, 1)


def test_a_429_after_the_pause_is_a_new_decrease() -> None:
    limiter, clock = make(600)
    limiter.on_rate_limited(1.0)
    clock.now += 3.0
    limiter.on_rate_limited(1.0)
    assert limiter.current_rpm == pytest.approx(600 * 0.7 * 0.7)
    assert limiter.snapshot()["decreases"] == 2


def test_the_pace_never_falls_below_one_rpm() -> None:
    limiter, clock = make(2)
    for _ in range(5):
        limiter.on_rate_limited(0.0)
        clock.now += 10.0
    assert limiter.current_rpm == 1.0


def test_should_stop_aborts_a_wait_without_taking_the_slot() -> None:
    limiter, clock = make(6)  # one request every 10 s
    start = clock.now
    assert limiter.acquire(0)
    assert not limiter.acquire(0, should_stop=lambda: len(clock.naps) >= 3)
    assert clock.naps == [0.25] * 3
    assert not limiter.acquire(0, should_stop=lambda: True)
    assert limiter.acquire(0)  # the slot is still there for the next caller
    assert clock.now == pytest.approx(start + 10.0)
    assert limiter.snapshot()["rate_limited"] == 0


def test_no_limits_means_no_pacing_until_a_429() -> None:
    limiter, clock = make(None)
    start = clock.now
    for _ in range(100):
        assert limiter.acquire(10_000)
        clock.now += 0.1  # 600 requests a minute, unpaced
    assert clock.naps == []
    assert limiter.current_rpm is None
    limiter.on_rate_limited(3.0)
    assert limiter.current_rpm == pytest.approx(600 * 0.7)  # measured, then decreased
    assert limiter.acquire(0)
    assert clock.now == pytest.approx(start + 10.0 + 3.0)
    for _ in range(20):  # no configured ceiling: it climbs past the measured rate, probing
        limiter.on_success()
    assert limiter.current_rpm == pytest.approx(420 + 20 * 12)


def test_random_429s_without_rpm_do_not_ratchet_the_pace_down() -> None:
    # A 429 in every 20 answers, each with a 1 s delay, whatever the pace (`make bench` P5's 5 %).
    limiter, clock = make(None)
    for _ in range(100):
        assert limiter.acquire(0)
        clock.now += 0.01  # 6,000 rpm before the first 429
    learnt = None
    for i in range(2000):
        assert limiter.acquire(0)
        if i % 20 == 19:
            limiter.on_rate_limited(1.0)
            learnt = learnt or limiter.current_rpm
        else:
            limiter.on_success()
    assert learnt is not None
    assert limiter.current_rpm >= learnt  # it recovers between 429s instead of sinking with each one


def test_snapshot_reports_configuration_and_pauses() -> None:
    limiter, clock = make(1200, tpm=100_000)
    limiter.on_rate_limited(4.0)
    clock.now += 10
    assert limiter.snapshot() == {"rpm": 1200, "tpm": 100_000, "current_rpm": pytest.approx(840),
                                  "rate_limited": 1, "pauses": 1, "paused_seconds": 4.0, "decreases": 1}


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rpm and tpm"):
        Limiter(0, None)
    with pytest.raises(ValueError, match="rpm and tpm"):
        Limiter(None, -5)


def test_threads_sharing_a_limiter_never_share_a_slot() -> None:
    limiter, clock = make(600)
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


class SlidingWindowServer:
    """At most `quota` requests in any 60 s window; beyond, 429 with RetryInfo until a slot frees.

    Like Gemini (and fake_gemini.py) the delay is in whole seconds, at least 1. `noise` is the share
    of requests answered 429 anyway (1 s), as a loaded API does.
    """

    def __init__(self, quota: int, rng: random.Random, noise: float = 0.0) -> None:
        self.quota, self.rng, self.noise = quota, rng, noise
        self.admitted: deque[float] = deque()
        self.last_arrival = float("-inf")

    def answer(self, arrival: float) -> float | None:
        assert arrival >= self.last_arrival  # the simulation keeps arrivals in order
        self.last_arrival = arrival
        if self.noise and self.rng.random() < self.noise:
            return 1.0
        while self.admitted and self.admitted[0] <= arrival - 60:
            self.admitted.popleft()
        if len(self.admitted) < self.quota:
            self.admitted.append(arrival)
            return None
        return max(1.0, math.ceil(self.admitted[0] + 60 - arrival))


def simulate(quota: int, rpm: float | None, *, seconds: float = 300, workers: int = 20, latency: float = 0.2,
             jitter: float = 0.0, noise: float = 0.0, seed: int = 7) -> tuple[int, int, Limiter]:
    """Drive one limiter with `workers` logical workers on a fake clock: (answered ok, answered 429, limiter).

    Responses are delivered while a worker naps, at their own time, as they would be with threads.
    """
    rng = random.Random(seed)
    server = SlidingWindowServer(quota, rng, noise)
    now = [0.0]
    inbox: list[tuple[float, int, int, float | None]] = []  # (due, seq, worker, retry_after or None)
    ready = [(0.0, w) for w in range(workers)]
    counts = [0, 0]

    def advance(until: float) -> None:
        while inbox and inbox[0][0] <= until:
            due, _, worker, retry_after = heapq.heappop(inbox)
            now[0] = max(now[0], due)
            if retry_after is None:
                limiter.on_success()
            else:
                limiter.on_rate_limited(retry_after)
            counts[retry_after is not None] += 1
            heapq.heappush(ready, (now[0], worker))
        now[0] = max(now[0], until)

    limiter = Limiter(rpm, None, clock=lambda: now[0], sleep=lambda s: advance(now[0] + s))
    seq = 0
    while True:
        if not ready:  # every worker is waiting for an answer
            advance(inbox[0][0])
        at, worker = heapq.heappop(ready)
        advance(at)
        assert limiter.acquire(500)
        if now[0] >= seconds:
            return counts[0], counts[1], limiter
        seq += 1
        retry_after = server.answer(now[0] + rng.uniform(0, jitter))
        heapq.heappush(inbox, (now[0] + latency, seq, worker, retry_after))


def test_sliding_window_paced_just_under_the_quota_runs_at_full_speed_with_no_429() -> None:
    ok, rejected, _ = simulate(1200, 1200 * 0.99)
    assert rejected == 0
    assert ok / 300 >= 0.97 * 1200 / 60


def test_sliding_window_paced_at_the_quota_with_network_jitter_keeps_429s_rare() -> None:
    # The bench: at exactly the quota, jitter lets a request arrive within 60 s of the one 1200 before.
    ok, rejected, limiter = simulate(1200, 1200, jitter=0.02)
    assert rejected <= 0.002 * (ok + rejected)
    assert ok / 300 >= 0.97 * 1200 / 60
    assert limiter.current_rpm == 1200


def test_sliding_window_with_rpm_set_too_high_is_held_to_the_quota_by_pauses() -> None:
    ok, rejected, _ = simulate(600, 1200, seconds=600)
    assert ok / 600 >= 0.97 * 600 / 60
    assert rejected <= 0.02 * (ok + rejected)


def test_sliding_window_with_no_rpm_learns_a_pace() -> None:
    ok, rejected, limiter = simulate(1200, None, seconds=600)
    assert ok / 600 >= 0.97 * 1200 / 60
    assert rejected <= 0.05 * (ok + rejected)
    assert limiter.current_rpm is not None


def test_random_429s_cost_their_pauses_but_do_not_ratchet_the_pace_down() -> None:
    # 0.2 % of answers are 429 (1 s) whatever the pace, every 25 s or so: the pauses cost ~4 %.
    ok, rejected, limiter = simulate(10**6, 1200, seconds=600, noise=0.002)
    assert 5 <= rejected <= 0.005 * (ok + rejected)
    assert ok / 600 >= 0.93 * 1200 / 60
    assert limiter.current_rpm == pytest.approx(1200, rel=0.3)
