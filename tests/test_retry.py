"""The retry policy and loop, with fakes: nothing sleeps, every wait is recorded and asserted."""

from __future__ import annotations

import pytest

from enrichkit.errors import Abandoned, AuthError, QuotaExhausted, StageFailure
from enrichkit.pace.retry import AttemptState, CallGates, RetryPolicy, call_with_retry
from enrichkit.run.counters import Counters
from enrichkit.run.stopping import StopSignal
from test_classify import RETRY_INFO, api_error


class Script:
    """A call that raises the scripted exceptions in order, then returns 'ok'."""

    def __init__(self, *outcomes: BaseException) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, request: object = None) -> str:
        self.calls += 1
        if self.outcomes:
            raise self.outcomes.pop(0)
        return "ok"


class Run:
    """One `call_with_retry` with recorded naps (as tenacity's tests pass `sleep=intervals.append`)."""

    def __init__(self, max_retries: int = 2, base: float = 1.0, stop: bool = False, remote: bool = True) -> None:
        self.naps: list[float] = []
        self.seen: list[tuple[int, str]] = []
        self.stats = Counters()  # what the attempts counted (a record's counters in the enricher)
        self.policy = RetryPolicy(max_retries=max_retries, base=base, sleep=self.naps.append)
        self.stop = StopSignal()
        if stop:
            self.stop.abandon()
        self.remote = remote

    def __call__(self, call: Script, provider: str = "gemini") -> str:
        return call_with_retry(call, "request", policy=self.policy, counters=self.stats, provider=provider,
                               stop=self.stop,
                               on_failure=lambda attempt, f: self.seen.append((attempt, f.error_type)),
                               gates=CallGates() if self.remote else None)

    @property
    def waited(self) -> float:
        return sum(self.naps)


def test_transient_errors_are_retried_after_a_backoff_then_succeed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("random.uniform", lambda low, high: high)  # full jitter at its top: the cap of each step
    run = Run(base=1.0)
    call = Script(api_error(503, "UNAVAILABLE"), StageFailure("validation_error", "x"))
    assert run(call) == "ok" and call.calls == 3
    assert run.seen == [(1, "server_error"), (2, "validation_error")]
    assert (run.stats.requests, run.stats.retries) == (3, 2)
    assert run.waited == pytest.approx(1.0 + 2.0)  # 1 s, then 2 s: exponential


def test_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(base=1.0, cap=10.0)
    waits = [policy.backoff(failures) for failures in range(1, 12) for _ in range(50)]
    assert all(0 <= w <= 10.0 for w in waits) and max(waits) > 5
    assert all(0 <= policy.backoff(3) <= 4 for _ in range(50))


def test_permanent_error_is_not_retried() -> None:
    run = Run()
    call = Script(api_error(400, "INVALID_ARGUMENT"))
    with pytest.raises(StageFailure) as info:
        run(call)
    assert info.value.error_type == "client_error" and call.calls == 1 and run.naps == []


def test_retries_run_out_after_max_retries_with_a_wait_before_each() -> None:
    run = Run(max_retries=2)
    call = Script(*[api_error(500, "INTERNAL")] * 5)
    with pytest.raises(StageFailure):
        run(call)
    assert call.calls == 3
    assert run.waited > 0  # removing the backoff wait fails this test


def test_rate_limits_do_not_use_up_retries_and_wait_the_servers_delay_without_a_limiter() -> None:
    run = Run(max_retries=1)
    call = Script(*[api_error(429, "RESOURCE_EXHAUSTED", details=[RETRY_INFO])] * 6, api_error(500, "INTERNAL"))
    assert run(call) == "ok"
    assert run.stats.rate_limited == 6 and call.calls == 8
    assert run.waited >= 6 * 7.0  # each 429 said 7 s


def test_a_failure_that_allows_one_retry_gets_one() -> None:
    run = Run(max_retries=5)
    call = Script(*[StageFailure("blocked", "SAFETY", retries_allowed=1)] * 3)
    with pytest.raises(StageFailure):
        run(call)
    assert call.calls == 2


def test_a_failure_that_allows_none_is_not_retried() -> None:
    run = Run(max_retries=5)
    call = Script(StageFailure("blocked", "prompt blocked", retries_allowed=0))
    with pytest.raises(StageFailure):
        run(call)
    assert call.calls == 1


def test_daily_quota_stops_the_run() -> None:
    daily = api_error(429, "RESOURCE_EXHAUSTED", details=[
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}]}])
    with pytest.raises(QuotaExhausted):
        Run()(Script(daily))


def test_auth_error_stops_the_run_for_gemini_only() -> None:
    with pytest.raises(AuthError):
        Run()(Script(api_error(403, "PERMISSION_DENIED")))


def test_a_stop_abandons_the_retry_without_failing_the_record() -> None:
    stop = StopSignal()
    call = Script(api_error(503, "UNAVAILABLE"))
    with pytest.raises(Abandoned):
        call_with_retry(call, "request", policy=RetryPolicy(base=0.001, sleep=lambda _: None), counters=Counters(),
                        provider="gemini", stop=stop, on_failure=lambda attempt, f: stop.abandon(), gates=CallGates())
    assert call.calls == 1


def test_a_stop_still_lets_a_local_first_attempt_run() -> None:
    # A python stage after the LLM answers arrived: the record is written, not redone on resume.
    assert Run(stop=True, remote=False)(Script(), provider="python") == "ok"


def test_local_calls_are_not_counted_as_requests() -> None:
    run = Run(remote=False)
    run(Script(), provider="python")
    assert run.stats.requests == 0


def _state(*failures: StageFailure, paced: bool = False) -> AttemptState:
    """The state after `failures`, as the loop records them (tenacity's tests build `make_retry_state`)."""
    state = AttemptState(paced=paced)
    for failure in failures:
        state.number += 1
        state.record(failure)
    return state


def test_the_retry_policies_read_one_attempt_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("random.uniform", lambda low, high: high)
    policy = RetryPolicy(max_retries=2, base=1.0)
    server = StageFailure("server_error", "503")
    assert policy.retryable(_state(server, server))  # two failures, two retries allowed: once more
    assert not policy.retryable(_state(server, server, server))
    assert not policy.retryable(_state(StageFailure("client_error", "400")))  # permanent
    safety = StageFailure("validation_error", "SAFETY", retries_allowed=1)
    assert policy.retryable(_state(safety)) and not policy.retryable(_state(safety, safety))
    # 429s use up no attempt: after five of them a server error still has its retries.
    limited = StageFailure("rate_limit", "429", retry_after=7.0)
    assert policy.retryable(_state(*[limited] * 5, server, server))
    assert _state(*[limited] * 5).streak == 5 and _state(*[limited] * 5, server).streak == 0
    # The waits: a paced 429 waits in the limiter, an unpaced one its delay here, the rest the backoff.
    assert policy.wait(_state(limited, paced=True)) == 0.0
    assert policy.wait(_state(limited)) == 7.0
    assert policy.wait(_state(server, server)) == pytest.approx(2.0)  # full jitter's top at 2 failures


def test_a_budget_without_a_limit_reserves_nothing_but_hears_of_a_request_given_up_at_its_deadline() -> None:
    """No --max-cost: nothing is reserved or settled per attempt, yet a request given up at its deadline (which
    Google may still bill) is noted, for the job's `unsettled_usd`."""
    from enrichkit.pace.budget import Budget
    from enrichkit.pace.deadline import DeadlineExceeded

    budget = Budget(None)
    gates = CallGates(worst_cost=0.004, cost=lambda answer: 0.001)
    run = Run(max_retries=0)
    assert call_with_retry(Script(), "request", policy=run.policy, counters=Counters(), provider="gemini",
                           stop=StopSignal(), on_failure=lambda attempt, f: None, gates=gates, budget=budget) == "ok"
    assert (budget.reserved, budget.spent, budget.given_up) == (0.0, 0.0, 0.0)
    with pytest.raises(StageFailure) as failed:
        call_with_retry(Script(DeadlineExceeded("no complete answer")), "request", policy=run.policy,
                        counters=Counters(), provider="gemini", stop=StopSignal(), on_failure=lambda attempt, f: None,
                        gates=gates, budget=budget)
    assert failed.value.error_type == "timeout"
    assert (budget.reserved, budget.given_up) == (0.0, 0.004)


def test_a_metered_budget_reserves_the_worst_case_and_settles_what_the_answer_cost() -> None:
    from enrichkit.pace.budget import Budget

    budget = Budget(1.0)
    held: list[float] = []

    def call(request: object) -> str:
        held.append(budget.reserved)
        return "ok"

    assert call_with_retry(call, "request", policy=RetryPolicy(), counters=Counters(), provider="gemini",
                           stop=StopSignal(), on_failure=lambda attempt, f: None,
                           gates=CallGates(worst_cost=0.004, cost=lambda answer: 0.001), budget=budget) == "ok"
    assert held == [0.004]  # reserved while on the wire
    assert (budget.reserved, budget.spent) == (0.0, 0.001)
