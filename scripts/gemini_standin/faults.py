"""Fault names and the bodies of error faults, in Google's wire format (google.rpc details, camelCase)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from .quota import duration, google_delay
from .wire import RPC, Raw, Reply, error_body

if TYPE_CHECKING:
    from .config import FakeConfig

DOCS = "https://ai.google.dev/gemini-api/docs/rate-limits"
# Faults that still answer 200 (billed) and faults that answer an error instead. New names go last: the
# order decides which fault a prompt matching two texts gets, and what a seeded random draw picks.
ANSWER_FAULTS = ("blocked", "safety", "recitation", "prohibited_content", "blocklist", "spii",
                 "max_tokens_loop", "max_tokens_thinking", "finish")
ERROR_FAULTS = ("minute_429", "day_429", "bare_429", "prepay_429", "spend_cap_429", "limit_zero_429",
                "internal_500", "overloaded_503", "deadline_504", "html_502", "location_400", "echo_key_401",
                "flex_503", "help_day_429", "grounding_day_429", "retry_info_429")
FAULTS = ANSWER_FAULTS + ERROR_FAULTS
HTML_502 = """<!DOCTYPE html>
<html lang=en>
  <meta charset=utf-8>
  <meta name=viewport content="initial-scale=1, minimum-scale=1, width=device-width">
  <title>Error 502 (Server Error)!!1</title>
  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>
  <p><b>502.</b> <ins>That\u2019s an error.</ins>
  <p>The server encountered a temporary error and could not complete your request.<p>Please try again in 30 \
seconds.  <ins>That\u2019s all we know.</ins>
"""
# The 429 of a used-up daily quota that names none (python-genai#1427, Search grounding at ~5,000 a day;
# rikkahub#1431, 2026-07): only a Help link, no QuotaFailure, no RetryInfo.
EXCEEDED = ("You exceeded your current quota, please check your plan and billing details. For more information on "
            f"this error, head to: {DOCS}. To monitor your current usage, head to: https://ai.dev/rate-limit. ")
HELP = {"@type": RPC + "Help", "links": [{"description": "Learn more about Gemini API quotas", "url": DOCS}]}
QUOTA_SHAPES = ("full", "retry_info", "bare")  # what a window quota's 429 carries (FakeConfig.quota_429)
MESSAGES = {
    "bare_429": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "prepay_429": (429, "RESOURCE_EXHAUSTED", "Your prepayment credits are depleted. Please go to AI Studio "
                   "at https://ai.studio/projects to manage your project and billing. Learn more at "
                   "https://ai.google.dev/gemini-api/docs/billing#prepay. "),
    "spend_cap_429": (429, "RESOURCE_EXHAUSTED", "Your billing account has exceeded its monthly spending cap. "
                      "Please go to AI Studio at https://aistudio.google.com to manage your billing. Learn "
                      "more at https://ai.google.dev/gemini-api/docs/billing."),
    "internal_500": (500, "INTERNAL", "An internal error has occurred. Please retry or report in "
                     "https://developers.generativeai.google/guide/troubleshooting"),
    "overloaded_503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "flex_503": (503, "UNAVAILABLE", "The service is currently unavailable: flex capacity is exhausted, please "
                 "retry later or use the standard tier."),
    "deadline_504": (504, "DEADLINE_EXCEEDED", "The service is unable to finish processing within the deadline."),
    "location_400": (400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
}


def quota_ids(kind: str, free: bool) -> tuple[str, str]:
    """(quotaId, quotaMetric) of a quota: kind is "minute", "day", "tokens" or "grounding_day"."""
    metric = "generativelanguage.googleapis.com/"
    if kind == "grounding_day":  # Gemini 3's per-day Search-grounding quota (ids as clients quote them)
        tier = "-FreeTier" if free else ""
        return f"SearchGroundingRequestsPerDayPerProject{tier}", metric + "search_grounding_requests"
    if free:
        if kind == "tokens":
            return ("GenerateContentInputTokensPerModelPerMinute-FreeTier",
                    metric + "generate_content_free_tier_input_token_count")
        quota = "Minute" if kind == "minute" else "Day"
        return f"GenerateRequestsPer{quota}PerProjectPerModel-FreeTier", metric + "generate_content_free_tier_requests"
    if kind == "tokens":
        return ("GenerateContentPaidTierInputTokensPerModelPerMinute",
                metric + "generate_content_paid_tier_input_token_count")
    if kind == "day":
        return "GenerateRequestsPerDayPerProjectPerModel", metric + "generate_requests_per_model_per_day"
    return "GenerateRequestsPerMinutePerProjectPerModel", metric + "generate_requests_per_model"


def quota_error(model: str, violations: list[tuple[str, int | None]], delay: float, retry_delay: str,
                free: bool = False, shape: str = "full") -> Reply:
    """A 429 as the Gemini API sends it: QuotaFailure, Help and RetryInfo (find them by @type).

    violations are (kind, limit) pairs; a limit of None or 0 is left out of the body, as proto3 leaves out 0.
    `shape` "retry_info" sends only the RetryInfo (and a message naming no quota), "bare" no details at all
    ("Resource has been exhausted"), as a proxy or another region's front end may.
    """
    if shape == "bare":
        return error_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
    if shape == "retry_info":
        return error_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
                          [{"@type": RPC + "RetryInfo", "retryDelay": retry_delay}])
    lines, entries = [], []
    for kind, limit in violations:
        quota_id, metric = quota_ids(kind, free)
        lines.append(f"* Quota exceeded for metric: {metric}, limit: {limit or 0}, model: {model}")
        entry: dict[str, Any] = {"quotaMetric": metric, "quotaId": quota_id,
                                 "quotaDimensions": {"location": "global", "model": model}}
        if limit:
            entry["quotaValue"] = str(limit)
        entries.append(entry)
    message = (f"You exceeded your current quota, please check your plan and billing details. For more "
               f"information on this error, head to: {DOCS}. To monitor your current usage, head to: "
               f"https://ai.dev/rate-limit. \n" + "\n".join(lines) + f"\nPlease retry in {delay:.9f}s.")
    return error_body(429, "RESOURCE_EXHAUSTED", message, [
        {"@type": RPC + "QuotaFailure", "violations": entries},
        HELP,
        {"@type": RPC + "RetryInfo", "retryDelay": retry_delay},
    ])


def error_fault(fault: str, model: str, window: float, draw: float, free: bool, key: str | None = None) -> Reply:
    """The reply of an error fault; `draw` in [0, 1) picks its retry delay; `key` is the API key received."""
    if fault == "minute_429":  # a per-minute quota hit: Google-like 20-60 s (scaled with the window)
        delay = google_delay(window, draw)
        return quota_error(model, [("minute", 1000)], delay, duration(delay, window), free)
    if fault == "day_429":  # the per-day quota: its RetryInfo is short, not a day
        delay = window * (0.05 + draw * 0.35)
        return quota_error(model, [("day", 10_000)], delay, duration(delay, window), free)
    if fault == "help_day_429":  # a daily quota used up, saying only where to read about quotas
        return error_body(429, "RESOURCE_EXHAUSTED", EXCEEDED, [HELP])
    if fault == "grounding_day_429":  # Gemini 3's per-day Search-grounding quota (1,500 a day on Tier 2)
        delay = window * (0.05 + draw * 0.35)
        return quota_error(model, [("grounding_day", 1500)], delay, duration(delay, window), free)
    if fault == "retry_info_429":  # a per-minute 429 carrying only its RetryInfo
        delay = google_delay(window, draw)
        return quota_error(model, [("minute", 1000)], delay, duration(delay, window), free, shape="retry_info")
    if fault == "limit_zero_429":  # a model that is not on this tier at all
        delay = window * (0.1 + draw * 0.9)
        return quota_error(model, [("tokens", 0), ("minute", 0), ("day", 0)], delay, duration(delay, window), True)
    if fault == "html_502":
        return 502, Raw(HTML_502)
    if fault == "echo_key_401":  # a gateway or proxy in front of the API that quotes the key back, as some do
        return error_body(401, "UNAUTHENTICATED", f"API key '{key or ''}' is invalid for this gateway.")
    return error_body(*MESSAGES[fault])


def key_refusal(key: str | None, require_key: str | None, deny_key: str | None) -> Reply | None:
    """400 API_KEY_INVALID for a key other than the required one, 403 for the denied one, else None."""
    if require_key and key != require_key:
        return error_body(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
            {"@type": RPC + "ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
             "metadata": {"service": "generativelanguage.googleapis.com"}},
            {"@type": RPC + "LocalizedMessage", "locale": "en-US",
             "message": "API key not valid. Please pass a valid API key."}])
    if deny_key and key == deny_key:
        return error_body(403, "PERMISSION_DENIED", "Permission denied: Consumer has been suspended.", [
            {"@type": RPC + "ErrorInfo", "reason": "CONSUMER_SUSPENDED", "domain": "googleapis.com"}])
    return None


def draw_fault(config: FakeConfig, prompt: str, rng: random.Random, model: str = "") -> str | None:
    """A matching fault first (a text in the prompt, or `model:NAME` for every request to that model), then
    one draw shared by the random faults (each keeps its rate)."""
    for fault in FAULTS:
        if any(text in prompt or text == f"model:{model}" for text in config.fault_matching.get(fault, ())):
            return fault
    draw, edge = rng.random(), 0.0
    legacy = (("error", config.error_rate), ("rate_limit", config.rate_limit_rate),
              ("timeout", config.timeout_rate), ("malformed", config.malformed_rate))
    for fault, rate in (*legacy, *((f, config.faults.get(f, 0.0)) for f in FAULTS)):
        edge += rate
        if draw < edge:
            return fault
    return None
