"""Error classification: one place, provider-aware, every Gemini answer shape to the right error type."""

from __future__ import annotations

import pytest
import requests
from google.genai import errors as genai_errors

from enrichkit.classify import classify_error
from enrichkit.errors import BillingError, ConfigError, StageFailure

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


@pytest.mark.parametrize(("message", "quota_id", "quota"), [
    ("Quota exceeded", "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "day"),
    ("Quota exceeded", "GenerateRequestsPerMinutePerProjectPerModel", "minute"),
    ("Resource has been exhausted (e.g. check quota).", None, ""),
])
def test_429s_are_told_apart_by_their_quota(message: str, quota_id: str | None, quota: str) -> None:
    details = [{"@type": RPC + "QuotaFailure", "violations": [{"quotaId": quota_id}]}] if quota_id else []
    failure = classify_error(api_error(429, "RESOURCE_EXHAUSTED", message, details))
    assert (failure.error_type, failure.quota, failure.fatal) == ("rate_limit", quota, None)


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
