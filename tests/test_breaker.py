"""The shared circuit breaker: open, cool down, one probe, close or back off; on a fake clock."""

from __future__ import annotations

import threading

import pytest

from conftest import ExThread
from enrichkit.pace.breaker import CircuitBreaker, OutageTooLong
from enrichkit.testing import FakeClock


def make(**kwargs: float) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock(start=500.0)
    return CircuitBreaker(clock=clock, sleep=clock.sleep, **kwargs), clock  # type: ignore[arg-type]


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure()


def test_closed_lets_requests_through_at_once() -> None:
    breaker, clock = make()
    assert breaker.before_request()
    assert breaker.state == "closed"
    assert clock.sleeps == []


def test_opens_after_threshold_consecutive_failures_and_not_before() -> None:
    breaker, clock = make(threshold=3)
    fail(breaker, 2)
    assert breaker.state == "closed"
    assert breaker.before_request()
    assert clock.sleeps == []
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.snapshot()["opened"] == 1


def test_a_success_between_failures_resets_the_streak() -> None:
    breaker, _ = make(threshold=3)
    fail(breaker, 2)
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"


def test_open_waits_out_the_cooldown_in_naps_then_lets_one_probe() -> None:
    breaker, clock = make(threshold=1, base_cooldown=2.0)
    start = clock.now
    breaker.record_failure()
    assert breaker.before_request()
    assert clock.now == pytest.approx(start + 2.0)
    assert max(clock.sleeps) <= 0.25
    assert breaker.state == "half_open"


def test_only_one_probe_at_a_time() -> None:
    breaker, clock = make(threshold=1, base_cooldown=2.0)
    breaker.record_failure()
    clock.now += 2.0
    assert breaker.before_request()  # the probe
    assert not breaker.before_request(should_stop=lambda: len(clock.sleeps) >= 8)  # waited; no second probe
    assert clock.sleeps == [0.25] * 8
    assert breaker.state == "half_open"
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.before_request()


def test_a_failed_probe_reopens_with_the_cooldown_doubled_up_to_the_cap() -> None:
    breaker, clock = make(threshold=1, base_cooldown=2.0, max_cooldown=5.0)
    breaker.record_failure()
    waits = []
    for _ in range(3):
        before = clock.now
        assert breaker.before_request()
        waits.append(round(clock.now - before, 6))
        breaker.record_failure()  # the probe failed
    assert waits == [2.0, 4.0, 5.0]
    assert breaker.snapshot()["cooldown"] == 5.0
    breaker.record_success()
    assert breaker.snapshot()["cooldown"] == 2.0


def test_a_success_from_an_in_flight_request_closes_it_while_open() -> None:
    breaker, clock = make(threshold=2, base_cooldown=30.0)
    fail(breaker, 2)
    assert breaker.state == "open"
    breaker.record_success()  # sent before it opened, answered now: the service is back
    assert breaker.before_request()
    assert clock.sleeps == []


def test_failures_while_open_do_not_extend_the_cooldown() -> None:
    breaker, clock = make(threshold=2, base_cooldown=2.0)
    start = clock.now
    fail(breaker, 2)
    clock.now += 1.0
    fail(breaker, 3)  # requests sent before it opened
    assert breaker.before_request()
    assert clock.now == pytest.approx(start + 2.0)


def test_outage_too_long_counts_from_the_first_failure_of_the_streak() -> None:
    breaker, clock = make(threshold=3, base_cooldown=2.0, max_cooldown=4.0, max_outage=20.0)
    start = clock.now
    breaker.record_failure()
    clock.now += 5.0
    fail(breaker, 2)  # opens 5 s into the streak
    with pytest.raises(OutageTooLong) as caught:
        while True:
            assert breaker.before_request()
            breaker.record_failure()
    assert caught.value.seconds > 20.0
    assert clock.now - start == pytest.approx(20.0, abs=0.3)
    assert "failing for" in str(caught.value)


def test_should_stop_returns_false_while_waiting() -> None:
    breaker, clock = make(threshold=1, base_cooldown=10.0)
    breaker.record_failure()
    assert not breaker.before_request(should_stop=lambda: True)
    assert clock.sleeps == []
    assert not breaker.before_request(should_stop=lambda: len(clock.sleeps) >= 2)
    assert breaker.state == "open"  # no probe was taken


def test_a_probe_that_never_reports_is_replaced_after_max_cooldown() -> None:
    breaker, clock = make(threshold=1, base_cooldown=2.0, max_cooldown=10.0)
    breaker.record_failure()
    assert breaker.before_request()  # this probe's worker dies without a word
    before = clock.now
    assert breaker.before_request()
    assert clock.now - before == pytest.approx(10.0, abs=0.3)


def test_snapshot() -> None:
    breaker, clock = make(threshold=1, base_cooldown=2.0)
    assert breaker.snapshot() == {"state": "closed", "opened": 0, "cooldown": 2.0, "outage_seconds": 0.0}
    breaker.record_failure()
    clock.now += 1.5
    assert breaker.snapshot() == {"state": "open", "opened": 1, "cooldown": 2.0, "outage_seconds": 1.5}


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(threshold=0)
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(base_cooldown=10.0, max_cooldown=5.0)


def test_threads_after_the_cooldown_elect_exactly_one_probe() -> None:
    clock = FakeClock()
    settled = threading.Semaphore(0)  # one release per thread: it returned, or it is waiting
    probe_known = threading.Event()
    napping: set[str] = set()
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            first = threading.current_thread().name not in napping
            napping.add(threading.current_thread().name)
        if first:
            settled.release()
        assert probe_known.wait(timeout=30)  # no real sleeping: wait to be told
        with lock:
            clock.sleep(seconds)

    breaker = CircuitBreaker(threshold=1, base_cooldown=2.0, clock=clock, sleep=sleep)
    breaker.record_failure()
    clock.now += 2.0
    passed: list[str] = []

    def work() -> None:
        assert breaker.before_request()
        with lock:
            passed.append(threading.current_thread().name)
        if threading.current_thread().name not in napping:
            settled.release()

    threads = [ExThread(work, f"worker-{i}") for i in range(6)]
    for t in threads:
        t.start()
    for _ in threads:
        assert settled.acquire(timeout=30)
    assert len(passed) == 1  # one probe; five wait for its result
    assert breaker.state == "half_open"
    breaker.record_success()
    probe_known.set()
    for t in threads:
        t.join(timeout=30)
    assert len(passed) == 6
    assert breaker.state == "closed"
