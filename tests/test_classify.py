"""Error classification: one place, provider-aware, every Gemini answer shape to the right error type."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests
from google.genai import errors as genai_errors

from enrichkit.errors import BillingError, ConfigError, QuotaExhausted, StageFailure
from enrichkit.pace.classify import classify_error, daily_reset_text

RPC = "type.googleapis.com/google.rpc."
RETRY_INFO = {"@type": RPC + "RetryInfo", "retryDelay": "7s"}


def api_error(code: int, status: str, message: str = "m", details: list | None = None):  # type: ignore[no-untyped-def, type-arg]
    body = {"error": {"code": code, "status": status, "message": message, "details": details or []}}
    cls = genai_errors.ClientError if code < 500 else genai_errors.ServerError
    return cls(code, body, None)


def http_error(code: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = code
    return requests.HTTPError(f"{code} error", response=response)


@pytest.mark.parametrize(("exc", "error_type"), [
    (api_error(429, "RESOURCE_EXHAUSTED"), "rate_limit"),
    (api_error(500, "INTERNAL"), "server_error"),
    (api_error(503, "UNAVAILABLE"), "server_error"),
    (api_error(504, "DEADLINE_EXCEEDED"), "server_error"),
    (api_error(400, "INVALID_ARGUMENT"), "client_error"),
    (api_error(401, "UNAUTHENTICATED"), "auth_error"),
    (api_error(403, "PERMISSION_DENIED"), "auth_error"),
    (api_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
               [{"@type": RPC + "ErrorInfo", "reason": "API_KEY_INVALID"}]), "auth_error"),
    (TimeoutError("slow"), "timeout"),
    (ConnectionRefusedError("refused"), "server_error"),
    (ConnectionResetError("reset"), "server_error"),
    (ValueError("odd"), "client_error"),
    (StageFailure("validation_error", "bad json"), "validation_error"),
])
def test_gemini_errors(exc: BaseException, error_type: str) -> None:
    assert classify_error(exc, provider="gemini").error_type == error_type


def test_an_http_stages_401_and_403_fail_that_stage_not_the_run() -> None:
    for code in (401, 403):
        failure = classify_error(http_error(code), provider="http")
        assert failure.error_type == "client_error" and failure.fatal is None
    assert classify_error(http_error(429), provider="http").error_type == "rate_limit"
    assert classify_error(http_error(502), provider="http").error_type == "server_error"


def test_anything_a_python_stage_raises_fails_its_record() -> None:
    for exc in (ValueError("bug"), TimeoutError("its own timeout"), ConnectionError("its own call")):
        assert classify_error(exc, provider="python").error_type == "client_error"


def test_sdk_timeouts_and_connection_errors_are_classified() -> None:
    import httpx2

    assert classify_error(httpx2.ReadTimeout("t")).error_type == "timeout"
    refused = classify_error(httpx2.ConnectError("[Errno 111] Connection refused"))
    assert refused.error_type == "server_error" and refused.refused


def test_retry_delay_from_retry_info_header_or_message() -> None:
    assert classify_error(api_error(429, "RESOURCE_EXHAUSTED", details=[RETRY_INFO])).retry_after == 7.0
    assert classify_error(api_error(429, "RESOURCE_EXHAUSTED", "Please retry in 2.5s.")).retry_after == 2.5


HELP = {"@type": RPC + "Help", "links": [{"description": "Learn more about Gemini API quotas",
                                          "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}


@pytest.mark.parametrize(("message", "quota_id", "quota"), [
    ("Quota exceeded", "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "day"),
    ("Quota exceeded", "SearchGroundingRequestsPerDayPerProject", "day"),
    ("Quota exceeded", "GenerateRequestsPerMinutePerProjectPerModel", "minute"),
    ("Resource has been exhausted (e.g. check quota).", None, ""),
])
def test_429s_are_told_apart_by_their_quota(message: str, quota_id: str | None, quota: str) -> None:
    details = [{"@type": RPC + "QuotaFailure", "violations": [{"quotaId": quota_id}]}] if quota_id else []
    failure = classify_error(api_error(429, "RESOURCE_EXHAUSTED", message, details))
    assert (failure.error_type, failure.quota) == ("rate_limit", quota)
    assert isinstance(failure.fatal, QuotaExhausted) if quota == "day" else failure.fatal is None


@pytest.mark.parametrize(("details", "quota"), [
    ([HELP], "day"),  # a Help link alone: a used-up daily quota (Search grounding's, python-genai#1427)
    ([HELP, RETRY_INFO], ""),  # a time to retry: paced
    ([RETRY_INFO], ""),
    ([], ""),
])
def test_a_429_with_only_a_help_link_is_a_daily_quota(details: list[dict[str, object]], quota: str) -> None:
    failure = classify_error(api_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check "
                                       "your plan and billing details.", details))
    assert failure.quota == quota and (failure.fatal is not None) == (quota == "day")


def test_a_daily_quota_s_stop_says_it_resets_at_pacific_midnight() -> None:
    grounding = {"@type": RPC + "QuotaFailure", "violations": [{
        "quotaId": "SearchGroundingRequestsPerDayPerProject", "quotaValue": "1500",
        "quotaMetric": "generativelanguage.googleapis.com/search_grounding_requests"}]}
    line = str(classify_error(api_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", [grounding])).fatal)
    assert line.startswith("the daily Search-grounding quota is used up (SearchGroundingRequestsPerDayPerProject, "
                           "1500 a day); it resets at midnight Pacific time (")
    assert daily_reset_text(datetime(2026, 12, 7, 22, 0, tzinfo=UTC)) == "2026-12-08 08:00 UTC, in 10 h 00 min"
    assert daily_reset_text(datetime(2026, 7, 7, 6, 30, tzinfo=UTC)) == "2026-07-07 07:00 UTC, in 0 h 30 min"


@pytest.mark.parametrize("message", [
    "Your prepayment credits are depleted. Please go to AI Studio at https://ai.studio/projects to manage your "
    "project and billing.",
    "Your billing account has exceeded its monthly spending cap. Please go to AI Studio.",
    "You exceeded your current quota.\n* Quota exceeded for metric: x, limit: 0, model: gemini-2.5-pro",
])
def test_account_429s_stop_the_run_with_a_billing_message(message: str) -> None:
    failure = classify_error(api_error(429, "RESOURCE_EXHAUSTED", message))
    assert failure.quota == "account" and isinstance(failure.fatal, BillingError)
    assert "billing" in str(failure.fatal)


@pytest.mark.parametrize(("code", "status", "message"), [
    (404, "NOT_FOUND", "This model models/gemini-2.0-flash is no longer available."),
    (400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
    (400, "INVALID_ARGUMENT", "Tool use with a response mime type: 'application/json' is unsupported"),
])
def test_configuration_errors_stop_the_run_instead_of_failing_every_record(code: int, status: str,
                                                                          message: str) -> None:
    failure = classify_error(api_error(code, status, message))
    assert isinstance(failure.fatal, ConfigError)


def test_an_html_502_is_a_server_error() -> None:
    html = "<html><title>Error 502 (Server Error)!!1</title></html>"
    exc = genai_errors.ServerError(502, {"message": html, "status": "Bad Gateway"}, None)
    assert classify_error(exc).error_type == "server_error"


def test_a_key_across_the_cut_of_a_long_message_is_redacted_whole() -> None:
    from enrichkit.redact import forget_secrets, register_secret

    key = "test-key-across-the-cut-0123456789abcdefgh"
    register_secret(key)
    try:
        # The message is cut at 500 characters, in the middle of the key (19 of its characters before the cut):
        # cut first, then redacted, the key's first part would be left whole.
        failure = classify_error(ValueError("x" * 480 + " " + key), provider="gemini")
        assert key[:10] not in failure.message and key[-10:] not in failure.message
        assert "***" in failure.message
    finally:
        forget_secrets()
