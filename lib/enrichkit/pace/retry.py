"""The retry policy: how often and how long to try a call again, and the loop that does it.

As tenacity does it: one state object per call (`AttemptState`, its `RetryCallState`) that small pure
policies read (`RetryPolicy.retryable`, `RetryPolicy.wait`; the backoff is tenacity's full-jitter
exponential), and a loop of single attempts (`_attempt`: breaker, budget, pace, call, classify) between
them; a remote call's attempt passes its `CallGates` (its model's limiter, its breaker, its cost).
Transient failures (see `enrichkit.pace.classify`) are retried up to `max_retries`; 429s are paced by the
limiter and do not use up attempts; a failure that says how often it may be retried (a SAFETY finish:
once; a blocked prompt: never) is held to that.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import tenacity

from enrichkit.errors import (
    Abandoned,
    OutageError,
    OutageTooLong,
    QuotaExhausted,
    StageFailure,
)
from enrichkit.pace.breaker import CircuitBreaker
from enrichkit.pace.budget import Budget
from enrichkit.pace.classify import classify_error, unreachable
from enrichkit.pace.limiter import Limiter
from enrichkit.run.counters import Counters

T = TypeVar("T")
R = TypeVar("R")


class Stop(Protocol):
    """What a call reads of the run's stop (`enrichkit.run.stopping.StopSignal`): `stopping`, a plain flag read
    before every attempt and wait, and `abandoning()`, asked only once the flag is set (a call in flight is given up
    only at a stop's deadline, a fatal error or a second Ctrl+C)."""

    stopping: bool

    def abandoning(self) -> bool: ...


@dataclass
class AttemptState:
    """One call's attempts so far, as tenacity keeps `RetryCallState`: what the policies read, written in one
    place (`record`) after each failed attempt."""

    number: int = 0  # attempts made (429s included)
    failures: int = 0  # failed attempts that count toward max_retries (429s do not)
    of_type: dict[str, int] = field(default_factory=dict)  # failed attempts by error type
    streak: int = 0  # consecutive 429s
    last: StageFailure | None = None
    paced: bool = False  # the last attempt went through a limiter (a 429's pause is the limiter's)

    def record(self, failure: StageFailure) -> None:
        self.last = failure
        if failure.error_type == "rate_limit":
            self.streak += 1
            return
        self.streak = 0
        self.failures += 1
        self.of_type[failure.error_type] = self.of_type.get(failure.error_type, 0) + 1


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter and a cap; 429s paced by the limiter, not counted as attempts.
    `give_up(state)` and `wait(state)` are pure: they read an `AttemptState` (tests build one by hand)."""

    max_retries: int = 3
    base: float = 1.0
    cap: float = 60.0
    rate_limit_streak: int = 25  # this many 429s in a row for one call: the quota is exhausted, not busy
    refused_limit: int = 3  # connections refused this many times before anything ever answered: wrong address
    sleep: Callable[[float], object] = field(default=time.sleep)

    def backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(failures-1))], tenacity's wait_random_exponential."""
        wait = tenacity.wait_random_exponential(multiplier=self.base, max=self.cap)
        return float(wait(types.SimpleNamespace(attempt_number=max(1, failures))))  # type: ignore[arg-type]

    def retryable(self, state: AttemptState) -> bool:
        """Try again? Not after a permanent error, nor once the retries are spent (a failure that says how
        often it may be retried, a SAFETY finish or a blocked prompt, is held to that)."""
        last = state.last
        if last is None or not last.transient:
            return False
        # A failure that allows N retries (a finish reason) is retried at most N times, and never past --max-retries.
        if last.retries_allowed is not None and state.of_type.get(last.error_type, 0) > last.retries_allowed:
            return False
        return state.failures <= self.max_retries

    def wait(self, state: AttemptState) -> float:
        """Seconds before the next attempt: a paced 429 waits in the limiter (which pauses every worker for the
        server's delay), an unpaced one its delay here; anything else the backoff of its failures so far."""
        last = state.last
        if last is not None and last.error_type == "rate_limit":
            return 0.0 if state.paced else (last.retry_after or self.backoff(max(state.streak, 1)))
        return self.backoff(state.failures)


def interruptible_sleep(seconds: float, sleep: Callable[[float], object], should_stop: Callable[[], bool]) -> None:
    """Sleep in short naps; raise `Abandoned` as soon as the run is stopping (checked after the last nap too)."""
    _nap(seconds, sleep, should_stop)
    if should_stop():
        raise Abandoned()


def _nap(seconds: float, sleep: Callable[[float], object], should_stop: Callable[[], bool]) -> None:
    """Sleep in short naps, each after a check that the run is not stopping (`Abandoned`). Not after the last one:
    the retry's next attempt checks first thing."""
    left = seconds
    while left > 0:
        if should_stop():
            raise Abandoned()
        step = min(left, 0.25)
        sleep(step)
        left -= step


@dataclass
class CallGates:
    """The gates one attempt of a remote call passes before it goes, and reports to after: its model's pace
    (the limiter, and the input tokens it reserves), its circuit breaker, and what the budget reserves for it
    and then charges; `request` is what the attempt sends when not the call's own (a fallback model's). A local call
    (a python stage) has none."""

    limiter: Limiter | None = None
    breaker: CircuitBreaker | None = None
    tokens: int = 0  # input tokens the limiter reserves before the answer says the real count
    actual_tokens: Callable[[Any], int] | None = None  # the answer's real input tokens
    worst_cost: float = 0.0  # what the budget reserves before the attempt (USD)
    cost: Callable[[Any], float] = lambda answer_or_failure: 0.0  # what an attempt cost (an answer, a failure)
    request: Any = None  # what this attempt sends, when not the call's own request (None: the call's own)


_LOCAL = CallGates()  # a local call's: none


def call_with_retry(send: Callable[[R], T], request: R, *, policy: RetryPolicy, counters: Counters, provider: str,
                    stop: Stop, on_failure: Callable[[int, StageFailure], None],
                    gates: CallGates | Callable[[], CallGates] | None = None, budget: Budget | None = None) -> T:
    """Send `request` (`send(request)`, one attempt) until it succeeds, a permanent error, or the retry budget is spent.

    Raises the last `StageFailure`; `Abandoned` when the run stops meanwhile; or the fatal error that
    ends the whole run (`AuthError`, `QuotaExhausted`, `BillingError`, `OutageError`, a `ConfigError`).
    `on_failure(attempt, failure)` sees every failed attempt; `provider` is the stage kind, for
    classification; the attempts are counted into `counters` (requests, retries, 429s). Without `gates` the call
    is local (a python stage): tried at once, not paced; a callable `gates` is asked before each attempt (a stage
    that moves to its fallback model moves to its pace too, and sends the fallback's request). A `budget` without
    a limit reserves nothing: it only hears of a request given up at its deadline (maybe billed).
    """
    fixed = gates if isinstance(gates, CallGates) else _LOCAL
    route = None if gates is None or isinstance(gates, CallGates) else gates

    def should_stop() -> bool:  # the waits' check: the flag, then (only once it is set) the deadline
        return stop.stopping and stop.abandoning()

    state = AttemptState()
    while True:
        state.number += 1
        g = fixed if route is None else route()
        try:
            return _attempt(send, request if g.request is None else g.request, state, g, remote=gates is not None,
                            policy=policy, counters=counters, provider=provider, should_stop=should_stop,
                            on_failure=on_failure, budget=budget)
        except StageFailure:
            if not policy.retryable(state):
                raise
        _nap(policy.wait(state), policy.sleep, should_stop)


def _attempt(send: Callable[[R], T], request: R, state: AttemptState, g: CallGates, *, remote: bool,
             policy: RetryPolicy, counters: Counters, provider: str, should_stop: Callable[[], bool],
             on_failure: Callable[[int, StageFailure], None], budget: Budget | None = None) -> T:
    """One attempt through its gates (breaker, budget, then pace); a failure is classified, told to the gates
    and `on_failure`, recorded in `state`, and raised. The budget's reservation is settled with what it cost."""
    state.paced = g.limiter is not None
    # A stop abandons calls that go out or wait; a local first attempt (a python stage) still runs,
    # so a record whose answers are all in is written rather than redone.
    if (remote or state.number > 1) and should_stop():
        raise Abandoned()
    try:
        if g.breaker is not None and not g.breaker.before_request(should_stop):
            raise Abandoned()
    except OutageTooLong as exc:
        raise OutageError(f"the API has been failing for {exc.seconds:.0f} s (longer than --max-outage); "
                          "run again with --resume when it is back") from None
    metered = budget is not None and budget.limit is not None  # else nothing is reserved, nothing to settle
    held = budget.reserve(g.worst_cost, should_stop) if metered and budget is not None else 0.0
    cost = given_up = 0.0
    try:
        if g.limiter is not None and not g.limiter.acquire(g.tokens, should_stop):
            raise Abandoned()
        if remote:
            counters.requests += 1
            if state.number > 1:
                counters.retries += 1
        try:
            result = send(request)
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes unlabelled
            failure = classify_error(exc, provider=provider)
            # A request given up at its deadline may still be answered and billed: its worst case stays spent.
            if failure.error_type == "timeout":
                given_up = g.worst_cost
            elif metered:
                cost = g.cost(failure)
            on_failure(state.number, failure)
            _account(failure, g)
            _raise_if_fatal(failure, g, policy, state.streak + 1)
            state.record(failure)
            if failure.error_type == "rate_limit":
                counters.rate_limited += 1
            raise failure from None
        if metered:
            cost = g.cost(result)
    finally:
        if budget is not None and (metered or given_up):
            budget.settle(held, cost, given_up=given_up)
    if g.breaker is not None:
        g.breaker.record_success()
    if g.limiter is not None:
        g.limiter.on_success()
        g.limiter.settle(g.tokens, g.actual_tokens(result) if g.actual_tokens else g.tokens)
    return result


def _raise_if_fatal(failure: StageFailure, g: CallGates, policy: RetryPolicy, streak: int) -> None:
    """Errors that end the whole run: every record would meet them."""
    if failure.fatal is not None:
        raise failure.fatal from None
    if failure.error_type == "rate_limit" and (failure.quota == "day" or streak >= policy.rate_limit_streak):
        why = "the daily quota is used up" if failure.quota == "day" else f"{streak} rate-limited answers in a row"
        raise QuotaExhausted(f"{why}; run again with --resume when the quota resets") from None
    if failure.refused and g.breaker is not None and g.breaker.unreachable(policy.refused_limit):
        raise unreachable(failure) from None


def _account(failure: StageFailure, g: CallGates) -> None:
    if g.breaker is not None:
        if failure.shed:
            pass  # a flex queue's wait or shedding says nothing of an outage: the breaker neither opens nor closes
        elif failure.error_type in ("server_error", "timeout"):
            g.breaker.record_failure(refused=failure.refused)
        else:
            g.breaker.record_success()  # it answered: the service is up
    if g.limiter is not None:
        if failure.error_type == "rate_limit":
            # A 429 naming a per-minute quota: True. Any other (only RetryInfo, no details at all, "Resource has
            # been exhausted"): None, judged by what it does: a flood of them is a quota, a sprinkle is load.
            names = True if failure.quota == "minute" else None
            g.limiter.on_rate_limited(failure.retry_after, quota=names, limit=failure.quota_limit)
        g.limiter.settle(g.tokens, 0 if failure.error_type != "timeout" else g.tokens)
