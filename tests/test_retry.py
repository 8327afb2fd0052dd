"""Error classification (one place) and the retry policy, with fakes: nothing sleeps."""

from __future__ import annotations

import pytest
from google.genai import errors as genai_errors

from enrichkit.errors import AuthError
from enrichkit.retry import (
    Abandoned,
    CallStats,
    QuotaExhausted,
    RetryPolicy,
    StageFailure,
    call_with_retry,
    classify_error,
)


def _api_error(code: int, status: str, message: str = "m", details: list | None = None):  # type: ignore[no-untyped-def, type-arg]
    body = {"error": {"code": code, "status": status, "message": message, "details": details or []}}
    cls = genai_errors.ClientError if code < 500 else genai_errors.ServerError
    return cls(code, body, None)


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}


@pytest.mark.parametrize(("exc", "error_type"), [
    (_api_error(429, "RESOURCE_EXHAUSTED"), "rate_limit"),
    (_api_error(500, "INTERNAL"), "server_error"),
    (_api_error(503, "UNAVAILABLE"), "server_error"),
    (_api_error(504, "DEADLINE_EXCEEDED"), "server_error"),
    (_api_error(400, "INVALID_ARGUMENT"), "client_error"),
    (_api_error(404, "NOT_FOUND"), "client_error"),
    (_api_error(401, "UNAUTHENTICATED"), "auth_error"),
    (_api_error(403, "PERMISSION_DENIED"), "auth_error"),
    (_api_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]), "auth_error"),
    (TimeoutError("slow"), "timeout"),
    (ConnectionRefusedError("refused"), "server_error"),
    (ConnectionResetError("reset"), "server_error"),
    (ValueError("bug in a python stage"), "client_error"),
    (StageFailure("validation_error", "bad json"), "validation_error"),
])
def test_classify_error(exc: BaseException, error_type: str) -> None:
    assert classify_error(exc).error_type == error_type


def test_sdk_timeouts_and_connection_errors_are_classified() -> None:
    import httpx2

    assert classify_error(httpx2.ReadTimeout("t")).error_type == "timeout"
    assert classify_error(httpx2.ConnectError("c")).error_type == "server_error"


def test_retry_delay_from_retry_info_header_or_message() -> None:
    assert classify_error(_api_error(429, "RESOURCE_EXHAUSTED", details=[RETRY_INFO])).retry_after == 7.0
    assert classify_error(_api_error(429, "RESOURCE_EXHAUSTED", "Please retry in 2.5s.")).retry_after == 2.5
    daily = _api_error(429, "RESOURCE_EXHAUSTED", details=[
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}])
    assert classify_error(daily).daily_quota


def test_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(base=1.0, cap=10.0)
    for failures in range(1, 12):
        for _ in range(50):
            assert 0 <= policy.backoff(failures) <= min(10.0, 2 ** (failures - 1))


class Script:
    """A call that raises the scripted exceptions in order, then returns 'ok'."""

    def __init__(self, *outcomes: BaseException) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.outcomes:
            raise self.outcomes.pop(0)
        return "ok"


def _run(call: Script, max_retries: int = 2, stop: bool = False) -> tuple[str, CallStats, list]:  # type: ignore[type-arg]
    naps: list[float] = []
    seen: list = []  # type: ignore[type-arg]
    stats = CallStats()
    result = call_with_retry(call, policy=RetryPolicy(max_retries=max_retries, base=0.001, sleep=naps.append),
                             stats=stats, should_stop=lambda: stop,
                             on_failure=lambda attempt, f: seen.append((attempt, f.error_type)))
    return result, stats, seen


def test_transient_errors_are_retried_then_succeed() -> None:
    call = Script(_api_error(503, "UNAVAILABLE"), StageFailure("validation_error", "x"))
    result, stats, seen = _run(call)
    assert result == "ok" and call.calls == 3
    assert seen == [(1, "server_error"), (2, "validation_error")]
    assert (stats.requests, stats.retries) == (3, 2)


def test_permanent_error_is_not_retried() -> None:
    call = Script(_api_error(400, "INVALID_ARGUMENT"))
    with pytest.raises(StageFailure) as info:
        _run(call)
    assert info.value.error_type == "client_error" and call.calls == 1


def test_retries_run_out() -> None:
    call = Script(*[_api_error(500, "INTERNAL")] * 5)
    with pytest.raises(StageFailure):
        _run(call, max_retries=2)
    assert call.calls == 3


def test_rate_limits_do_not_use_up_retries() -> None:
    call = Script(*[_api_error(429, "RESOURCE_EXHAUSTED", details=[RETRY_INFO])] * 6, _api_error(500, "INTERNAL"))
    result, stats, _ = _run(call, max_retries=1)
    assert result == "ok" and stats.rate_limited == 6 and call.calls == 8


def test_daily_quota_stops_the_run() -> None:
    daily = _api_error(429, "RESOURCE_EXHAUSTED", details=[
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}]}])
    with pytest.raises(QuotaExhausted):
        _run(Script(daily))


def test_auth_error_stops_the_run() -> None:
    with pytest.raises(AuthError):
        _run(Script(_api_error(403, "PERMISSION_DENIED")))


def test_a_stop_abandons_the_retry_without_failing_the_record() -> None:
    stop: list[bool] = []
    call = Script(_api_error(503, "UNAVAILABLE"))
    with pytest.raises(Abandoned):
        call_with_retry(call, policy=RetryPolicy(base=0.001, sleep=lambda _: None), stats=CallStats(),
                        should_stop=lambda: bool(stop), on_failure=lambda attempt, f: stop.append(True))
    assert call.calls == 1


def test_a_stop_still_lets_a_local_first_attempt_run() -> None:
    # A python stage after the LLM answers arrived: the record is written, not redone on resume.
    result, _, _ = _run(Script(), stop=True)
    assert result == "ok"
