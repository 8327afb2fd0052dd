"""What went wrong with a call (`classify_error`, the one place) and what to do about it (`call_with_retry`).

| error_type        | from                                                         | then                       |
|-------------------|--------------------------------------------------------------|----------------------------|
| rate_limit        | HTTP 429                                                     | pause all workers, retry   |
| server_error      | HTTP 500/502/503/504 (any 5xx), connection refused/reset     | backoff, retry             |
| timeout           | client timeout (httpx2/httpx/requests), HTTP 408             | backoff, retry             |
| validation_error  | an answer that is not JSON matching the stage's fields       | backoff, retry             |
| client_error      | any other 4xx, an exception raised by a python stage         | fail the record at once    |
| auth_error        | 401, 403, 400 API_KEY_INVALID                                | stop the run (exit 2)      |
"""

from __future__ import annotations

import re
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from enrichkit.breaker import CircuitBreaker, OutageTooLong
from enrichkit.errors import EXIT_FAILURES, AuthError, EnrichError
from enrichkit.limiter import Limiter

T = TypeVar("T")
TRANSIENT = frozenset({"rate_limit", "timeout", "server_error", "validation_error"})
_RETRY_IN = re.compile(r"retry in\s+([0-9.]+)\s*(ms|s)\b", re.IGNORECASE)


class StageFailure(Exception):
    """One failed attempt, classified."""

    def __init__(self, error_type: str, message: str, *, retry_after: float | None = None,
                 daily_quota: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.retry_after = retry_after
        self.daily_quota = daily_quota
        self.tokens: tuple[int, int] | None = None  # (prompt, output) of an answer that was billed but unusable

    @property
    def transient(self) -> bool:
        return self.error_type in TRANSIENT


class Abandoned(Exception):
    """The run is stopping: this call gave up without failing its record."""


class QuotaExhausted(EnrichError):
    """The provider's quota is used up (a daily quota, or 429s without end): stop, resumable."""

    exit_code = EXIT_FAILURES


class OutageError(EnrichError):
    """The API has been down longer than --max-outage: stop, resumable."""

    exit_code = EXIT_FAILURES


def classify_error(exc: BaseException) -> StageFailure:
    """Map any exception a stage call can raise to a `StageFailure` (see the module table)."""
    if isinstance(exc, StageFailure):
        return exc
    code = _status_code(exc)
    if code is not None:
        return _classify_status(code, exc)
    if _is_timeout(exc):
        return StageFailure("timeout", f"timed out: {_describe(exc)}")
    if _is_connection_error(exc):
        return StageFailure("server_error", f"connection failed: {_describe(exc)}")
    return StageFailure("client_error", _describe(exc))


def _classify_status(code: int, exc: BaseException) -> StageFailure:
    message = _describe(exc)
    details = _error_details(exc)
    if code == 429:
        daily = any("PerDay" in str(v.get("quotaId", "")) for d in details for v in d.get("violations", []) or [])
        return StageFailure("rate_limit", message, retry_after=_retry_after(exc, details, message),
                            daily_quota=daily)
    if code in (401, 403) or any(d.get("reason") == "API_KEY_INVALID" for d in details) \
            or "API key not valid" in message:
        return StageFailure("auth_error", message)
    if code == 408:
        return StageFailure("timeout", message)
    if code >= 500:
        return StageFailure("server_error", message)
    return StageFailure("client_error", message)


def _status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)  # google.genai.errors.APIError
    if isinstance(code, int) and 100 <= code < 600:
        return code
    response = getattr(exc, "response", None)  # requests.HTTPError
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and type(exc).__name__ == "HTTPError":
        return status
    return None


def _error_details(exc: BaseException) -> list[dict[str, Any]]:
    body = getattr(exc, "details", None)
    if isinstance(body, dict):
        body = body.get("error", body)
        found = body.get("details") if isinstance(body, dict) else None
        if isinstance(found, list):
            return [d for d in found if isinstance(d, dict)]
    return []


def _retry_after(exc: BaseException, details: list[dict[str, Any]], message: str) -> float | None:
    """The server's own delay: RetryInfo.retryDelay, else a Retry-After header, else 'retry in N s'."""
    for d in details:
        if str(d.get("@type", "")).endswith("RetryInfo"):
            delay = d.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return float(delay[:-1])
                except ValueError:
                    pass
            if isinstance(delay, dict):
                return float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is not None:
        try:
            value = headers.get("retry-after")
            if value:
                return float(value)
        except (TypeError, ValueError):
            pass
    match = _RETRY_IN.search(message)
    if match:
        value = float(match.group(1))
        return value / 1000 if match.group(2).lower() == "ms" else value
    return None


def _exception_types(*names: tuple[str, str]) -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module_name, attr in names:
        module = sys.modules.get(module_name)
        cls = getattr(module, attr, None) if module else None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _is_timeout(exc: BaseException) -> bool:
    # The SDK raises its HTTP client's timeouts (httpx2), not APIError; only modules already imported can match.
    kinds = (TimeoutError, *_exception_types(("httpx2", "TimeoutException"), ("httpx", "TimeoutException"),
                                              ("requests", "Timeout")))
    return isinstance(exc, kinds)


def _is_connection_error(exc: BaseException) -> bool:
    # Checked after timeouts: every other transport failure (refused, reset, dropped) means the server side.
    kinds = (ConnectionError, *_exception_types(("httpx2", "TransportError"), ("httpx", "TransportError"),
                                                 ("requests", "ConnectionError")))
    return isinstance(exc, kinds)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return " ".join(text.split())[:500]


@dataclass
class CallStats:
    """What one record's calls cost, counted by the worker and summed by the runner."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter and a cap; 429s paced by the limiter, not counted as attempts."""

    max_retries: int = 3
    base: float = 1.0
    cap: float = 60.0
    rate_limit_streak: int = 25  # this many 429s in a row for one call: the quota is exhausted, not busy
    sleep: Callable[[float], object] = time.sleep

    def backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(failures-1))], tenacity's wait_random_exponential."""
        wait = tenacity.wait_random_exponential(multiplier=self.base, max=self.cap)
        return float(wait(types.SimpleNamespace(attempt_number=max(1, failures))))  # type: ignore[arg-type]


def interruptible_sleep(seconds: float, sleep: Callable[[float], object], should_stop: Callable[[], bool]) -> None:
    """Sleep in short naps; raise `Abandoned` as soon as the run is stopping."""
    left = seconds
    while True:
        if should_stop():
            raise Abandoned()
        if left <= 0:
            return
        step = min(left, 0.25)
        sleep(step)
        left -= step


def call_with_retry(call: Callable[[], T], *, policy: RetryPolicy, stats: CallStats,
                    should_stop: Callable[[], bool], on_failure: Callable[[int, StageFailure], None],
                    limiter: Limiter | None = None, breaker: CircuitBreaker | None = None,
                    tokens: Callable[[], int] = lambda: 0,
                    actual_tokens: Callable[[T], int] | None = None) -> T:
    """Run `call` until it succeeds, a permanent error, or the retry budget is spent.

    Raises the last `StageFailure`, `Abandoned` when the run stops meanwhile, `QuotaExhausted`,
    `OutageError` or `AuthError`. `on_failure(attempt, failure)` sees every failed attempt.
    """
    failures = 0  # attempts that count toward max_retries (429s do not)
    streak = 0  # consecutive 429s
    last: StageFailure | None = None
    remote = limiter is not None or breaker is not None

    def attempt_once(number: int) -> T:
        nonlocal failures, streak, last
        # A stop abandons calls that go out or wait; a local first attempt (a python stage) still runs,
        # so a record whose answers are all in is written rather than redone.
        if should_stop() and (remote or number > 1):
            raise Abandoned()
        try:
            if breaker is not None and not breaker.before_request(should_stop):
                raise Abandoned()
        except OutageTooLong as exc:
            raise OutageError(f"the API has been failing for {exc.seconds:.0f} s (longer than --max-outage); "
                              "run again with --resume when it is back") from None
        estimate = tokens()
        if limiter is not None and not limiter.acquire(estimate, should_stop):
            raise Abandoned()
        stats.requests += 1
        if number > 1:
            stats.retries += 1
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes unlabelled
            failure = classify_error(exc)
            last = failure
            on_failure(number, failure)
            _account(failure, limiter, breaker, estimate)
            if failure.error_type == "auth_error":
                raise AuthError(f"the API rejected the key ({failure.message[:200]}); check GEMINI_API_KEY "
                                "in the environment or .env") from None
            if failure.error_type == "rate_limit":
                stats.rate_limited += 1
                streak += 1
                if failure.daily_quota or streak >= policy.rate_limit_streak:
                    why = "the daily quota is used up" if failure.daily_quota else \
                        f"{streak} rate-limited answers in a row"
                    raise QuotaExhausted(f"{why}; run again with --resume when the quota resets") from None
            else:
                streak = 0
                failures += 1
            raise failure from None
        if breaker is not None:
            breaker.record_success()
        if limiter is not None:
            limiter.on_success()
            limiter.settle(estimate, actual_tokens(result) if actual_tokens else estimate)
        return result

    def stop(_state: Any) -> bool:
        return failures > policy.max_retries

    def wait(_state: Any) -> float:
        if last is not None and last.error_type == "rate_limit":
            # The limiter pauses every worker for the server's delay; without one, wait it here.
            return 0.0 if limiter is not None else (last.retry_after or policy.backoff(max(streak, 1)))
        return policy.backoff(failures)

    def nap(seconds: float) -> None:
        interruptible_sleep(seconds, policy.sleep, should_stop)

    done_attempts = 0
    if not remote:
        # A local call (a python stage) almost always succeeds at once: try it before building a tenacity
        # loop, which would cost more than the call (~25 us, a quarter of a no-op record's budget).
        try:
            return attempt_once(1)
        except StageFailure as failure:
            if not failure.transient or stop(None):
                raise
        done_attempts = 1
        nap(wait(None))
    retrying = tenacity.Retrying(
        stop=stop, wait=wait, sleep=nap, reraise=True,
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, StageFailure) and e.transient))
    for attempt in retrying:
        with attempt:
            return attempt_once(attempt.retry_state.attempt_number + done_attempts)
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover


def _account(failure: StageFailure, limiter: Limiter | None, breaker: CircuitBreaker | None, estimate: int) -> None:
    if breaker is not None:
        if failure.error_type in ("server_error", "timeout"):
            breaker.record_failure()
        else:
            breaker.record_success()  # it answered: the service is up
    if limiter is not None:
        if failure.error_type == "rate_limit":
            limiter.on_rate_limited(failure.retry_after)
        limiter.settle(estimate, 0 if failure.error_type != "timeout" else estimate)
