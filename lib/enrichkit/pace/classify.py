"""What went wrong with a call: any exception a stage can raise becomes a `StageFailure`.

| error_type       | from                                                           | then                  |
|------------------|----------------------------------------------------------------|-----------------------|
| rate_limit       | HTTP 429                                                       | pace, wait its delay  |
| server_error     | HTTP 5xx (an HTML 502 too), connection refused or reset        | backoff, retry        |
| timeout          | client timeout (httpx2/httpx/requests), HTTP 408               | backoff, retry        |
| validation_error | an answer that is not JSON matching the stage's fields         | backoff, retry        |
| blocked          | Gemini refused the prompt or stopped for safety (the provider) | once or never         |
| client_error     | any other 4xx; whatever a python stage raises or returns wrong | fail the record       |
| auth_error       | Gemini: 401, 403, 400 API_KEY_INVALID                          | stop the run (exit 2) |

An answer that finished other than STOP is decided by `FINISH_REASONS` below: every finish reason of the
pinned SDK is retried once, never retried, or stops the run (an account-level reason, exit 1); a reason
the table does not know is retried at most once.

Provider-aware: an `http` stage's 401/403 is that stage's failure (`client_error`), never "check
GEMINI_API_KEY". A Gemini 429 is further told apart by its quota: per minute, or not said (pace: see
`enrichkit.pace.judge`); per day (a PerDay quotaId, Search grounding's too, or a Help link and nothing else:
stop, resumable, saying when it resets); or the account (credits, a monthly spend cap, "limit: 0": stop
with a billing line). Gemini
configuration errors (a retired model, an unsupported location or tool combination) carry a fatal
`ConfigError`: every record would fail the same way, so the run stops instead.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from enrichkit.errors import (
    AccountError,
    AuthError,
    BillingError,
    ConfigError,
    EnrichError,
    OutageError,
    QuotaExhausted,
    StageFailure,
)
from enrichkit.redact import redact

_RETRY_IN = re.compile(r"retry in\s+([0-9.]+)\s*(ms|s)\b", re.IGNORECASE)
# Account-level 429s: waiting does not help, paying does (Google's texts, see docs/models-and-prices.md).
_BILLING = re.compile(r"prepayment credits are depleted|credits? (?:are|is) (?:exhausted|depleted)|spend(?:ing)? cap"
                      r"|billing account|limit:\s*0\b", re.IGNORECASE)
_DAILY = re.compile(r"PerDay|per_day", re.IGNORECASE)  # a quotaId or quotaMetric counted per day
_PACIFIC = ZoneInfo("America/Los_Angeles")  # Gemini API per-day quotas reset at midnight Pacific time


@dataclass(frozen=True)
class Finish:
    """What an answer's finishReason decides: the failure's error type and how often it is retried
    (0: never, 1: once, None: the run stops, every record would meet it)."""

    error_type: str
    retries: int | None
    why: str


# Every FinishReason of google-genai 3.4.0 (google/genai/types.py), but STOP (an answer) and MAX_TOKENS and
# CONTINUATION (a cut answer, usable when its JSON is whole: gemini_reply). A reason not listed here (a future
# one) is retried at most once (UNKNOWN_FINISH).
FINISH_REASONS: dict[str, Finish] = {
    "FINISH_REASON_UNSPECIFIED": Finish("validation_error", 1, "no reason given"),
    "SAFETY": Finish("blocked", 1, "the answer may violate safety policies"),
    "RECITATION": Finish("blocked", 1, "the answer may recite a source"),
    "LANGUAGE": Finish("blocked", 0, "the prompt's language is not supported"),
    "OTHER": Finish("validation_error", 1, "stopped for a reason Google does not give"),
    "BLOCKLIST": Finish("blocked", 0, "a term of a blocklist"),
    "PROHIBITED_CONTENT": Finish("blocked", 0, "the content may be prohibited"),
    "SPII": Finish("blocked", 0, "sensitive personal information"),
    "MALFORMED_FUNCTION_CALL": Finish("validation_error", 1, "the model wrote a malformed tool call"),
    "IMAGE_SAFETY": Finish("blocked", 1, "an image may violate safety policies"),
    "IMAGE_PROHIBITED_CONTENT": Finish("blocked", 0, "an image may be prohibited"),
    "IMAGE_OTHER": Finish("validation_error", 1, "image generation stopped"),
    "NO_IMAGE": Finish("validation_error", 1, "no image was generated"),
    "IMAGE_RECITATION": Finish("blocked", 1, "an image may recite a source"),
    "UNEXPECTED_TOOL_CALL": Finish("validation_error", 1, "the model called a tool it was not given"),
    "TOO_MANY_TOOL_CALLS": Finish("validation_error", 1, "the model looped on tool calls (searches)"),
    "MISSING_THOUGHT_SIGNATURE": Finish("client_error", 0, "the request lacks a thought signature"),
    "MALFORMED_RESPONSE": Finish("validation_error", 1, "the model's response was malformed"),
    "ESCALATION": Finish("blocked", 0, "filtered by an escalation rule"),
    "PUP_LIMITED_DISABLED": Finish("blocked", None, "the account is limited or disabled for Prohibited Use Policy "
                                   "violations"),
    "MODEL_ARMOR": Finish("blocked", 0, "blocked by Model Armor"),
}
UNKNOWN_FINISH = Finish("validation_error", 1, "a finish reason enrichkit does not know")
ANSWER_FINISHES = frozenset({"STOP", "MAX_TOKENS", "CONTINUATION"})  # text may be read (a cut one if whole)


def finish_failure(finish: str) -> StageFailure:
    """The failure of an answer that finished with `finish` (not STOP): retried as FINISH_REASONS says; an
    account-level one carries the fatal error that stops the run (exit 1)."""
    decision = FINISH_REASONS.get(finish, UNKNOWN_FINISH)
    if decision.retries is None:
        failure = StageFailure(decision.error_type, f"the answer was stopped ({finish}: {decision.why})",
                               retries_allowed=0)
        failure.fatal = AccountError(f"the API refuses this account ({finish}: {decision.why}); check the "
                                     "project's standing at https://aistudio.google.com, then run again with "
                                     "--resume")
        return failure
    retry = "retried once" if decision.retries else "not retried"
    return StageFailure(decision.error_type, f"the answer was stopped ({finish}: {decision.why}); {retry}",
                        retries_allowed=decision.retries)


def classify_error(exc: BaseException, *, provider: str = "gemini") -> StageFailure:
    """Map any exception a stage call can raise to a `StageFailure` (see the module table).

    `provider` is the stage kind that raised it: "gemini" (an llm stage), "http" or "python".
    """
    if isinstance(exc, StageFailure):
        return exc
    if provider == "python":
        return StageFailure("client_error", f"the function raised {_describe(exc)}")
    code = _status_code(exc)
    if code is not None:
        return _classify_status(code, exc, provider)
    if _is_timeout(exc):
        return StageFailure("timeout", f"timed out: {_describe(exc)}")
    if _is_connection_error(exc):
        failure = StageFailure("server_error", f"connection failed: {_describe(exc)}")
        failure.refused = _is_refused(exc)
        failure.unconnected = True
        return failure
    return StageFailure("client_error", _describe(exc))


def _classify_status(code: int, exc: BaseException, provider: str) -> StageFailure:
    message = _describe(exc)
    details = error_details(exc)
    if code == 429:
        return _rate_limited(exc, message, details, provider)
    if code == 408:
        return StageFailure("timeout", message)
    if code >= 500:
        return StageFailure("server_error", message)
    if provider == "gemini":
        if code in (401, 403) or any(d.get("reason") == "API_KEY_INVALID" for d in details) \
                or "API key not valid" in message:
            failure = StageFailure("auth_error", message)
            failure.fatal = AuthError(f"the API rejected the key ({message[:200]}); check GEMINI_API_KEY in the "
                                      "environment or .env")
            return failure
        fatal = _configuration_error(code, message)
        if fatal is not None:
            failure = StageFailure("client_error", message)
            failure.fatal = fatal
            return failure
    return StageFailure("client_error", message)


def unreachable(failure: StageFailure) -> OutageError:
    """The error that stops a run when nothing answers at the API's address."""
    return OutageError(f"nothing answers at the API's address ({failure.message[:200]}); check --base-url (or "
                       "GEMINI_BASE_URL) and the network, then run again with --resume")


def _configuration_error(code: int, message: str) -> EnrichError | None:
    """A Gemini 4xx that every record would meet: stop the run (exit 2) instead of failing them all."""
    lower = message.lower()
    if code == 404 and ("model" in lower or "not found" in lower):
        return ConfigError(f"the API does not serve this model ({_short(message)}); pick a current model "
                           "(the run checks models before record 1)")
    if "location is not supported" in lower or "failed_precondition" in lower:
        return ConfigError(f"the API refuses requests from here ({_short(message)}); this is a property of the "
                           "project or network, not of a record")
    if "temperature" in lower and ("not supported" in lower or "deprecated" in lower):
        return ConfigError(f"the model refuses temperature ({_short(message)}); remove temperature from the "
                           "stages file")
    if ("thinking" in lower and ("budget" in lower or "level" in lower)) or "only works in thinking mode" in lower:
        return ConfigError(f"the model refuses this stage's thinking settings ({_short(message)}); fix "
                           "thinking_budget / thinking_level in the stages file")
    if "tool use with a response mime type" in lower or ("is unsupported" in lower and "mime" in lower):
        return ConfigError(f"the model cannot combine Search grounding with a JSON response ({_short(message)}); "
                           "use a 3.x model or let the stage embed the schema in its prompt")
    return None


def quota_kind(details: list[dict[str, Any]], message: str) -> str:
    """"day" for a per-day quota, "account" for billing (credits, spend cap, no quota at all),
    "minute" for a per-minute quota, "" when the answer does not say.

    A 429 whose only detail is a Help link (no QuotaFailure, no RetryInfo) is a per-day quota: Google
    sends that shape when a daily quota, Search grounding's above all, is used up, and gives no time
    to retry because none short would do.
    """
    if _BILLING.search(message):
        return "account"
    quotas = _quota_names(details)
    if any(_DAILY.search(q) for q in quotas):
        return "day"
    if any("PerMinute" in q for q in quotas):
        return "minute"
    types = {str(d.get("@type", "")).rsplit(".", 1)[-1] for d in details}
    if "Help" in types and not types & {"QuotaFailure", "RetryInfo"}:
        return "day"
    return ""


def _quota_names(details: list[dict[str, Any]]) -> list[str]:
    """Each QuotaFailure violation's quotaId and quotaMetric, joined."""
    return [f"{v.get('quotaId', '')} {v.get('quotaMetric', '')}" for d in details
            for v in d.get("violations", []) or [] if isinstance(v, dict)]


def _rate_limited(exc: BaseException, message: str, details: list[dict[str, Any]], provider: str) -> StageFailure:
    """A 429: paced (a per-minute quota, or one that does not say), or the run stops (a day's quota, billing)."""
    quota = quota_kind(details, message) if provider == "gemini" else ""
    failure = StageFailure("rate_limit", message, retry_after=retry_delay(exc, details, message), quota=quota)
    failure.quota_limit = _requests_quota(details) if quota == "minute" else None
    if quota == "account":
        failure.fatal = BillingError(_billing_line(message))
    elif quota == "day":
        failure.fatal = QuotaExhausted(_daily_line(details, message))
    return failure


def _daily_line(details: list[dict[str, Any]], message: str) -> str:
    """The stop line of a used-up daily quota: which one (as the 429 names it), and when it resets."""
    daily = [v for d in details for v in d.get("violations", []) or []
             if isinstance(v, dict) and _DAILY.search(f"{v.get('quotaId', '')} {v.get('quotaMetric', '')}")]
    grounding = any("grounding" in str(v).lower() for v in daily) or "grounding" in message.lower()
    what = "the daily Search-grounding quota" if grounding else "a daily quota"
    if daily:
        v = daily[0]
        said = str(v.get("quotaId") or v.get("quotaMetric"))
        said += f", {v['quotaValue']} a day" if v.get("quotaValue") else ""
    else:
        said = "the 429 names no quota and gives no time to retry"
    return (f"{what} is used up ({said}); it resets at midnight Pacific time ({daily_reset_text()}): run again "
            "with --resume then")


def daily_reset_text(now: datetime | None = None) -> str:
    """When Gemini's per-day quotas next reset (midnight Pacific time), in UTC and how long from `now`."""
    now = now or datetime.now(UTC)
    pacific = now.astimezone(_PACIFIC)
    midnight = datetime.combine(pacific.date() + timedelta(days=1), time(0), tzinfo=_PACIFIC)
    left = int((midnight - now).total_seconds() // 60)
    return f"{midnight.astimezone(UTC):%Y-%m-%d %H:%M} UTC, in {left // 60} h {left % 60:02d} min"


def _billing_line(message: str) -> str:
    lower = message.lower()
    if "spend" in lower and "cap" in lower:
        from enrichkit.config.pricing import load_pricing  # the cap is pricing.toml's tier1_monthly_cap (one source)

        cap = load_pricing().tier1_cap
        tier1 = f" (Tier 1: ${cap:,.0f})" if cap is not None else ""
        return (f"the monthly spend cap is reached ({_short(message)}); each usage tier caps a billing account's "
                f"monthly spend{tier1} and a project may set its own: raise the cap or the "
                "tier at https://aistudio.google.com, or wait for the next month, then run again with --resume")
    return (f"the API refused for billing reasons ({_short(message)}); check the project's credits, spend cap "
            "and tier at https://aistudio.google.com, then run again with --resume")


def _requests_quota(details: list[dict[str, Any]]) -> float | None:
    """The per-minute request quota a 429 states (QuotaFailure `quotaValue` of a requests quota), if any."""
    for d in details:
        for v in d.get("violations", []) or []:
            if isinstance(v, dict) and "Requests" in str(v.get("quotaId", "")) and "PerMinute" in str(v.get("quotaId")):
                try:
                    return float(v["quotaValue"])
                except (KeyError, TypeError, ValueError):
                    return None
    return None


def _status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)  # google.genai.errors.APIError
    if isinstance(code, int) and 100 <= code < 600:
        return code
    response = getattr(exc, "response", None)  # requests.HTTPError
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and type(exc).__name__ == "HTTPError":
        return status
    return None


def error_details(exc: BaseException) -> list[dict[str, Any]]:
    """The `details` list of a Google error body (RetryInfo, QuotaFailure, ErrorInfo, Help)."""
    body = getattr(exc, "details", None)
    if isinstance(body, dict):
        body = body.get("error", body)
        found = body.get("details") if isinstance(body, dict) else None
        if isinstance(found, list):
            return [d for d in found if isinstance(d, dict)]
    return []


def retry_delay(exc: BaseException, details: list[dict[str, Any]], message: str) -> float | None:
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
        except (TypeError, ValueError, AttributeError):
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
    kinds: tuple[type[BaseException], ...] = (
        TimeoutError, *_exception_types(("httpx2", "TimeoutException"), ("httpx", "TimeoutException"),
                                        ("requests", "Timeout")))
    return isinstance(exc, kinds)


def _is_connection_error(exc: BaseException) -> bool:
    # Checked after timeouts: every other transport failure (refused, reset, dropped) means the server side.
    kinds: tuple[type[BaseException], ...] = (
        ConnectionError, *_exception_types(("httpx2", "TransportError"), ("httpx", "TransportError"),
                                           ("requests", "ConnectionError")))
    return isinstance(exc, kinds)


def _is_refused(exc: BaseException) -> bool:
    """Nobody listens at that address (a typo in --base-url, a server not started): no request got through."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower() \
                or "name or service not known" in str(seen).lower() or "nodename nor servname" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None)  # google.genai.errors.APIError: the API's own message, not the dict
    if isinstance(message, str) and message.strip() and isinstance(getattr(exc, "code", None), int):
        text = f"{exc.code} {getattr(exc, 'status', '') or ''}: {message}".replace("  ", " ")  # type: ignore[attr-defined]
    else:
        text = str(exc).strip() or exc.__class__.__name__
    return redact(" ".join(text.split()))[:500]  # redacted whole: a key across the cut must not leave a piece


def _short(message: str) -> str:
    return message[:200]
