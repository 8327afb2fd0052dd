"""Local stand-in for the Gemini REST API (models, generateContent, countTokens), with fault injection.

Stdlib only. Run ``python scripts/fake_gemini.py --port 0 --rpm 60 --fault safety=0.05``, or in a test
``FakeGemini(FakeConfig(rpm=2)).start()``. Bodies follow Google's wire format (google.rpc details, camelCase).
Not Google's: GET /_health, GET /_stats, POST /_control, and GET|HEAD /grounding-api-redirect/{token}, which
stands in for vertexaisearch.cloud.google.com (302 to the source; the target is never fetched).
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import hashlib
import json
import math
import random
import re
import signal
import socket
import sys
import threading
import time
import weakref
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

MODEL_PATH = re.compile(r"^/(v1|v1beta)/models/([^/:]+):(generateContent|countTokens)$")
MODELS_PATH = re.compile(r"^/(v1|v1beta)/models(?:/([^/:]+))?$")
REDIRECT_PATH = re.compile(r"^/grounding-api-redirect/([A-Za-z0-9_-]+)$")
SCHEMA_MARKER = "keys and types:"  # enrichkit's prompt-embedded schema (search stages) follows this
RPC = "type.googleapis.com/google.rpc."
DOCS = "https://ai.google.dev/gemini-api/docs/rate-limits"
TOKEN_PREFIX = "AUZIYQ"  # how Google's grounding redirect tokens start
FIRST = ("Alice", "Bruno", "Chiara", "Daniel", "Elena", "Farid", "Greta", "Hiro", "Ingrid", "Jonas",
         "Keiko", "Luca", "Maya", "Nils", "Olivia", "Priya", "Rafael", "Sofia", "Tomas", "Yara")
LAST = ("Andersen", "Bauer", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito",
        "Jensen", "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Silva")
FIRMS = ("northbridge", "bluepeak", "harborline", "cedarfield", "ironwood", "silverlake", "oakmont",
         "redstone", "brightwater", "stonegate")
SUFFIXES = ("cap", "capital", "partners", "ventures", "equity")
JOB_TITLES = ("Managing Partner", "Partner", "Principal", "Head of Investor Relations", "CFO")
STATUSES = ("fundraising", "investing", "harvesting", "closed")

# Faults that still answer 200 (billed) and faults that answer an error instead.
ANSWER_FAULTS = ("blocked", "safety", "recitation", "prohibited_content", "blocklist", "spii",
                 "max_tokens_loop", "max_tokens_thinking")
ERROR_FAULTS = ("minute_429", "day_429", "bare_429", "prepay_429", "spend_cap_429", "limit_zero_429",
                "internal_500", "overloaded_503", "deadline_504", "html_502", "location_400")
FAULTS = ANSWER_FAULTS + ERROR_FAULTS
CHOICES = {"window_mode": ("sliding", "fixed"), "rpm_delay": ("exact", "precise", "google"),
           "grounded_wrap": ("json", "prose", "fence", "mixed"),
           "block_reason": ("SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "IMAGE_SAFETY")}


class ModelInfo(NamedTuple):
    name: str
    display: str
    generation: str  # "2.5" or "3": decides thinking controls and whether search + JSON mode is allowed
    kind: str  # "flash", "flash-lite", "pro" or "embedding"
    version: str = "001"
    alias_of: str | None = None


CATALOGUE = {m.name: m for m in (
    ModelInfo("gemini-2.5-flash", "Gemini 2.5 Flash", "2.5", "flash"),
    ModelInfo("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", "2.5", "flash-lite"),
    ModelInfo("gemini-2.5-pro", "Gemini 2.5 Pro", "2.5", "pro"),
    ModelInfo("gemini-3-flash-preview", "Gemini 3 Flash Preview", "3", "flash", "3-flash-preview-12-2025"),
    ModelInfo("gemini-3.1-pro-preview", "Gemini 3.1 Pro Preview", "3", "pro", "3.1-pro-preview-02-2026"),
    ModelInfo("gemini-3.1-flash-lite", "Gemini 3.1 Flash-Lite", "3", "flash-lite"),
    ModelInfo("gemini-3.5-flash", "Gemini 3.5 Flash", "3", "flash"),
    ModelInfo("gemini-flash-latest", "Gemini Flash Latest", "3", "flash", "latest", "gemini-3.5-flash"),
    ModelInfo("gemini-flash-lite-latest", "Gemini Flash-Lite Latest", "3", "flash-lite", "latest",
              "gemini-3.1-flash-lite"),
    ModelInfo("gemini-pro-latest", "Gemini Pro Latest", "3", "pro", "latest", "gemini-3.1-pro-preview"),
    ModelInfo("gemini-embedding-001", "Gemini Embedding 001", "-", "embedding"),
)}
RETIRED = ("gemini-2.0-flash", "gemini-2.0-flash-001", "gemini-2.0-flash-lite", "gemini-2.0-flash-lite-001",
           "gemini-3-pro-preview")  # answered "no longer available"; 1.x names get the generic not-found 404
GENERATE_METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
EMBED_METHODS = ["embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"]
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


@dataclasses.dataclass
class FakeConfig:
    """Behaviour of the stand-in; every fault is off by default. Rates are fractions in [0, 1]."""

    host: str = "127.0.0.1"
    port: int = 0
    port_file: str | None = None
    latency: float = 0.0
    jitter: float = 0.0
    seed: int = 0
    rpm: int | None = None
    window: float = 60.0  # the quota window in seconds; tests shrink it to make a quota storm quick
    window_mode: str = "sliding"  # sliding: any `window` seconds; fixed: windows aligned to the server's start
    rpm_delay: str = "exact"  # exact: whole seconds until a slot frees; precise: to the ms; google: [w/3, w]
    tpm: int | None = None  # input tokens per window
    free_tier: bool = False  # quota ids and metrics of the free tier (...-FreeTier)
    daily_quota: int | None = None
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    hang_seconds: float = 30.0
    malformed_rate: float = 0.0
    rate_limit_rate: float = 0.0
    outage: float = 0.0
    outage_after: int = 0
    fail_matching: list[str] = dataclasses.field(default_factory=list)
    faults: dict[str, float] = dataclasses.field(default_factory=dict)  # fault name -> random rate
    fault_matching: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # fault name -> texts
    require_key: str | None = None
    deny_key: str | None = None
    extra_models: list[str] = dataclasses.field(default_factory=list)  # accepted besides the catalogue
    reroute: dict[str, str] = dataclasses.field(default_factory=dict)  # model -> modelVersion serving it
    thinking: bool = True  # thoughtsTokenCount on thinking models
    cached_fraction: float = 0.0  # share of the prompt reported as cachedContentTokenCount
    null_rate: float = 0.0  # share of nullable fields answered null
    grounded_wrap: str = "mixed"  # grounded answers without JSON mode: json, prose, fence or mixed
    block_reason: str = "PROHIBITED_CONTENT"  # promptFeedback.blockReason of the "blocked" fault
    flex_latency: float = 0.0  # seconds added to serviceTier "flex" requests
    honor_server_timeout: bool = True  # 504 when X-Server-Timeout is shorter than the latency


FLOATS = {"latency", "jitter", "error_rate", "timeout_rate", "hang_seconds", "malformed_rate",
          "rate_limit_rate", "outage", "window", "cached_fraction", "null_rate", "flex_latency"}
OPTIONAL_INTS = {"rpm", "daily_quota", "tpm"}
BOOLS = {"thinking", "free_tier", "honor_server_timeout"}
RUNTIME_KEYS = {f.name for f in dataclasses.fields(FakeConfig)} - {"host", "port", "port_file"}


class Raw(NamedTuple):
    """A reply that is not JSON (an HTML error page, a redirect)."""

    body: str
    content_type: str = "text/html; charset=UTF-8"
    location: str | None = None


Reply = tuple[int, "dict[str, Any] | Raw"]


def error_body(code: int, status: str, message: str, details: list[Any] | None = None) -> Reply:
    """A reply in Google's error format; `details` only when there are some, as Google sends it."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return code, {"error": error}


def quota_ids(kind: str, free: bool) -> tuple[str, str]:
    """(quotaId, quotaMetric) of a quota: kind is "minute", "day" or "tokens"."""
    metric = "generativelanguage.googleapis.com/"
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
                free: bool = False) -> Reply:
    """A 429 as the Gemini API sends it: QuotaFailure, Help and RetryInfo (find them by @type).

    violations are (kind, limit) pairs; a limit of None or 0 is left out of the body, as proto3 leaves out 0.
    """
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
        {"@type": RPC + "Help", "links": [{"description": "Learn more about Gemini API quotas", "url": DOCS}]},
        {"@type": RPC + "RetryInfo", "retryDelay": retry_delay},
    ])


def not_found(model: str, version: str, method: str) -> Reply:
    if model in RETIRED:
        return error_body(404, "NOT_FOUND", f"This model models/{model} is no longer available. Please update "
                          "your code to use a newer model for the latest features and improvements.")
    return error_body(404, "NOT_FOUND", f"models/{model} is not found for API version {version}, or is not "
                      f"supported for {method}. Call ListModels to see the list of available models and their "
                      "supported methods.")


def error_fault(fault: str, model: str, window: float, draw: float, free: bool) -> Reply:
    """The reply of an error fault; `draw` in [0, 1) picks its retry delay."""
    if fault == "minute_429":  # a per-minute quota hit: Google-like 20-60 s (scaled with the window)
        delay = window / 3 + draw * window * 2 / 3
        return quota_error(model, [("minute", 1000)], delay, duration(delay, window), free)
    if fault == "day_429":  # the per-day quota: its RetryInfo is short, not a day
        delay = window * (0.05 + draw * 0.35)
        return quota_error(model, [("day", 10_000)], delay, duration(delay, window), free)
    if fault == "limit_zero_429":  # a model that is not on this tier at all
        delay = window * (0.1 + draw * 0.9)
        return quota_error(model, [("tokens", 0), ("minute", 0), ("day", 0)], delay, duration(delay, window), True)
    messages = {
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
        "deadline_504": (504, "DEADLINE_EXCEEDED", "The service is unable to finish processing within the deadline."),
        "location_400": (400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
    }
    if fault == "html_502":
        return 502, Raw(HTML_502)
    return error_body(*messages[fault])


def duration(seconds: float, window: float) -> str:
    """A google.protobuf.Duration as Google writes RetryInfo: whole seconds, rounded down; ms on a scaled window."""
    return f"{max(1, int(seconds))}s" if window >= 60 else f"{max(0.001, seconds):.3f}s"


def digest(text: str) -> int:
    """A stable 64-bit number for a text (lone surrogates and all)."""
    return int.from_bytes(hashlib.sha256(text.encode(errors="replace")).digest()[:8], "big")


def pick(mapping: Any, *keys: str) -> Any:
    """The first of `keys` (camelCase and snake_case spellings) present in a dict."""
    if not isinstance(mapping, dict):
        return None
    return next((mapping[k] for k in keys if mapping.get(k) is not None), None)


def texts_of(contents: Any) -> list[str]:
    texts: list[str] = []
    for content in contents if isinstance(contents, list) else [contents]:
        parts = content.get("parts") or [] if isinstance(content, dict) else [{"text": content}]
        texts += [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return texts


def prompt_text(request: dict[str, Any]) -> str:
    """All text parts of the request's contents, joined by newlines."""
    return "\n".join(texts_of(request.get("contents") or []))


def requested_schema(request: dict[str, Any], prompt: str) -> dict[str, Any] | None:
    """The response schema from generationConfig, else the one enrichkit embeds in the prompt."""
    config = pick(request, "generationConfig", "generation_config") or {}
    schema = pick(config, "responseJsonSchema", "response_json_schema", "responseSchema", "response_schema")
    if isinstance(schema, dict):
        return schema
    at = prompt.find(SCHEMA_MARKER)
    try:
        flat = json.JSONDecoder().raw_decode(prompt[at + len(SCHEMA_MARKER):].lstrip())[0] if at >= 0 else 0
    except ValueError:
        return None
    return {"type": "object", "properties": flat} if isinstance(flat, dict) else None


def schema_type(schema: dict[str, Any]) -> str:
    """The JSON type a schema asks for, lower-case; the first non-null one of a list or anyOf."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if kind is None:
        options = [o for o in schema.get("anyOf") or schema.get("oneOf") or [] if isinstance(o, dict)]
        kind = next((schema_type(o) for o in options if schema_type(o) != "null"), None)
        return kind or ("object" if "properties" in schema else "string")
    return str(kind).lower()


def nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    kinds: list[Any] = kind if isinstance(kind, list) else [kind]
    options = [o.get("type") for o in schema.get("anyOf") or [] if isinstance(o, dict)]
    return bool(schema.get("nullable")) or any(str(k).lower() == "null" for k in [*kinds, *options])


def firm_of(prompt: str, seed: int) -> tuple[str, str, str]:
    """One person and one firm per prompt (first name, last name, firm), so that the answer agrees with itself."""
    p = digest(f"{seed}\x1f{prompt}")
    return FIRST[p % len(FIRST)], LAST[(p >> 8) % len(LAST)], FIRMS[(p >> 16) % len(FIRMS)]


def domain_of(prompt: str, seed: int) -> str:
    suffix = SUFFIXES[(digest(f"{seed}\x1f{prompt}") >> 24) % len(SUFFIXES)]
    return f"{firm_of(prompt, seed)[2]}{suffix}.com"


def make_value(name: str, schema: Any, prompt: str, seed: int, null_rate: float = 0.0) -> Any:
    """A value of the schema's type, plausible for a field called ``name``, fixed by (seed, prompt, name)."""
    schema = schema if isinstance(schema, dict) else {"type": schema}  # {"poc_name": "string"} style
    kind, lower = schema_type(schema), name.lower()
    h = digest(f"{seed}\x1f{prompt}\x1f{name}")
    if null_rate and nullable(schema) and (h >> 40) % 10_000 < null_rate * 10_000:
        return None
    if schema.get("enum"):
        return schema["enum"][h % len(schema["enum"])]
    if kind == "object":
        return {k: make_value(k, sub, prompt, seed, null_rate) for k, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [make_value(name, schema.get("items") or {}, prompt, seed, null_rate)]
    if kind in ("boolean", "integer", "number", "null"):
        if kind == "integer":
            return 1990 + h % 36 if any(w in lower for w in ("year", "vintage", "founded")) else 1 + h % 500
        if kind == "number":
            scored = any(w in lower for w in ("confidence", "score", "probability"))
            return (h % 101) / 100 if scored else round(20 + (h % 49_800) / 10, 1)
        return bool(h & 1) if kind == "boolean" else None
    first, last, _ = firm_of(prompt, seed)
    domain = domain_of(prompt, seed)
    if "email" in lower:
        return f"{first}.{last}@{domain}".lower()
    if any(w in lower for w in ("domain", "url", "website")):
        return domain
    if "name" in lower:
        return f"{first} {last}"
    if "title" in lower or "role" in lower:
        return JOB_TITLES[h % len(JOB_TITLES)]
    if "status" in lower:
        return STATUSES[h % len(STATUSES)]
    words = re.findall(r"[A-Za-z][A-Za-z'-]{3,}", prompt.split(SCHEMA_MARKER)[0]) or ["unknown"]
    return " ".join(dict.fromkeys(words[(h >> (8 * i)) % len(words)].lower() for i in range(3)))


def wrap(text: str, mode: str, prompt: str) -> str:
    """A grounded answer without JSON mode, as 2.x models write it: bare, in prose or in a code fence."""
    if mode == "mixed":
        mode = ("json", "prose", "fence")[digest(f"wrap\x1f{prompt}") % 3]
    if mode == "prose":
        return (f"Based on the search results, here is what I found:\n\n{text}\n\n"
                "These details come from public sources and may have changed.")
    return f"```json\n{text}\n```" if mode == "fence" else text


def loop_text(value: Any, tokens: int) -> str:
    """Structured output stuck in a loop: a JSON object that never closes, about `tokens` tokens long."""
    head = json.dumps(value, ensure_ascii=False)[:-1] if isinstance(value, dict) and value else "{"
    head += (", " if len(head) > 1 else "") + '"notes": "'
    return (head + "see above, " * (tokens * 4 // 11 + 1))[: max(1, tokens * 4)]


def token_of(target: str) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(target.encode()).decode().rstrip("=")


def target_of(token: str) -> str | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    raw = token[len(TOKEN_PREFIX):]
    try:
        target = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except ValueError:
        return None
    return target if target.startswith("https://") else None


def usage(prompt: int, output: int, thoughts: int, tool: int, cached: int) -> dict[str, Any]:
    """usageMetadata as Google writes it: zero counts left out; total = prompt + output + thoughts + tool use."""
    body: dict[str, Any] = {"promptTokenCount": prompt}
    if output:
        body["candidatesTokenCount"] = output
    body["totalTokenCount"] = prompt + output + thoughts + tool
    body["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    for key, count in (("thoughtsTokenCount", thoughts), ("toolUsePromptTokenCount", tool),
                       ("cachedContentTokenCount", cached)):
        if count:
            body[key] = count
    if tool:
        body["toolUsePromptTokensDetails"] = [{"modality": "TEXT", "tokenCount": tool}]
    return body


SAFETY_RATINGS = [{"category": f"HARM_CATEGORY_{c}", "probability": p, **({"blocked": True} if p == "MEDIUM" else {})}
                  for c, p in (("SEXUALLY_EXPLICIT", "NEGLIGIBLE"), ("HATE_SPEECH", "NEGLIGIBLE"),
                               ("HARASSMENT", "NEGLIGIBLE"), ("DANGEROUS_CONTENT", "MEDIUM"))]


class QuotaWindow:
    """Amounts admitted in the last `window` seconds (sliding) or in the current aligned window (fixed)."""

    def __init__(self) -> None:
        self.events: collections.deque[tuple[float, int]] = collections.deque()
        self.used = 0
        self.index = -1

    def wait(self, now: float, amount: int, limit: int, window: float, mode: str, origin: float) -> float | None:
        """None if `amount` fits now, else the seconds until it would (nothing is recorded)."""
        if mode == "fixed":
            index = math.floor((now - origin) / window)
            if index != self.index:
                self.index, self.used = index, 0
            return origin + (index + 1) * window - now if self.used + amount > limit else None
        while self.events and self.events[0][0] <= now - window:
            self.used -= self.events.popleft()[1]
        if self.used + amount <= limit:
            return None
        excess = self.used + amount - limit
        for t, n in self.events:  # the oldest admissions leave the window first
            excess -= n
            if excess <= 0:
                return t + window - now
        return window  # more than the whole quota at once: never fits, try again a window later

    def record(self, now: float, amount: int, mode: str) -> None:
        self.used += amount
        if mode != "fixed":  # a sliding window keeps each admission to let it go later
            self.events.append((now, amount))


class FakeGemini:
    """The stand-in server: ``start()`` returns the port, ``stop()`` ends it, ``stats()`` counts."""

    def __init__(self, config: FakeConfig | None = None, **overrides: Any) -> None:
        self.config = dataclasses.replace(config or FakeConfig(), **overrides)
        self._lock = threading.Lock()  # guards config, counters, the quota windows and the RNG
        self._rng = random.Random(self.config.seed)
        self._stopping = threading.Event()  # wakes requests sleeping out a latency or a hang
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._requests, self._tokens = QuotaWindow(), QuotaWindow()
        self._origin = time.monotonic()  # fixed windows are aligned to multiples of `window` from here
        self._outage_from: float | None = None
        self._outage_base = self._daily_base = 0
        self._stats: dict[str, Any] = {
            "requests": 0, "by_status": collections.Counter(), "generate": 0, "count_tokens": 0,
            "answered": 0, "grounded": 0, "keys_seen": 0, "in_flight": 0, "max_in_flight": 0,
            "faults": collections.Counter(), "by_prompt": collections.Counter(),
            "by_model": collections.Counter(), "served_by": collections.Counter(), "search_queries": 0,
            "redirects": 0, "model_lookups": 0, "flex": 0,
            "tokens": {"prompt": 0, "candidates": 0, "thoughts": 0, "tool_use": 0, "cached": 0}}

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{self.config.host}:{self._server.server_address[1]}"

    def start(self) -> int:
        """Listen and serve in a daemon thread; returns the port."""
        self._server = _Server((self.config.host, self.config.port), self)
        self._origin = time.monotonic()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving, wake hung requests and close every open keep-alive connection."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeGemini:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def stats(self) -> dict[str, Any]:
        """Counters as plain JSON; API keys are counted, never shown."""
        with self._lock:
            counters: dict[str, Any] = json.loads(json.dumps(self._stats))
        return counters

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Apply runtime changes (flag names with underscores); returns the new config, keys masked."""
        if set(changes) - RUNTIME_KEYS:
            raise ValueError(f"unknown config keys: {sorted(set(changes) - RUNTIME_KEYS)}")
        values = {key: coerce(key, value) for key, value in changes.items()}  # all checked before any is set
        with self._lock:
            for key, value in values.items():
                setattr(self.config, key, value)
            if "seed" in changes:
                self._rng.seed(self.config.seed)
            if {"outage", "outage_after"} & set(changes):  # re-armed: counts requests from now
                self._outage_from, self._outage_base = None, self._stats["generate"]
            if "daily_quota" in changes:  # a new day: the quota counts answers from now
                self._daily_base = self._stats["answered"]
            if {"window", "window_mode"} & set(changes):
                self._requests, self._tokens, self._origin = QuotaWindow(), QuotaWindow(), time.monotonic()
            config = dataclasses.asdict(self.config)
        masked = {k: config[k] and "***" for k in ("require_key", "deny_key")}
        return {**config, **masked}

    def redirect_url(self, target: str) -> str:
        return f"{self.url}/grounding-api-redirect/{token_of(target)}"

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> Reply:
        """Answer one HTTP request: (status, JSON body or Raw). Never raises."""
        url = urlsplit(raw_path)
        query = parse_qs(url.query)
        key = headers.get("x-goog-api-key") or (query.get("key") or [""])[0] or None
        with self._lock:
            self._stats["requests"] += 1
            self._stats["keys_seen"] += bool(key)
        try:
            status, payload = self._route(method, url.path, query, key, body, headers)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # valid JSON, wrong shape
            status, payload = error_body(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc!r}")
        except Exception as exc:  # noqa: BLE001 - whatever else a client sends must not take the server down
            status, payload = error_body(500, "INTERNAL", f"fake_gemini could not handle this: {exc!r}")
        with self._lock:
            self._stats["by_status"][str(status)] += 1
        return status, payload

    def _route(self, method: str, path: str, query: dict[str, list[str]], key: str | None, body: bytes,
               headers: Any) -> Reply:
        if method == "GET" and path in ("/_health", "/_stats"):
            return 200, {"ok": True} if path == "/_health" else self.stats()
        if method in ("GET", "HEAD") and (redirect := REDIRECT_PATH.match(path)):
            return self._redirect(redirect.group(1))
        if method == "GET" and (listing := MODELS_PATH.match(path)):
            return self._models(listing.group(1), listing.group(2), query, key)
        match = MODEL_PATH.match(path)
        if method != "POST" or (match is None and path != "/_control"):
            return error_body(404, "NOT_FOUND", f"Method not found: {method} {path}")
        try:
            request = json.loads(body or b"{}")
        except ValueError as exc:
            return error_body(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}")
        if not isinstance(request, dict):
            return error_body(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
        if match is None:
            try:
                return 200, self.configure(**request)
            except (TypeError, ValueError) as exc:
                return error_body(400, "INVALID_ARGUMENT", str(exc))
        version, model = match.group(1), match.group(2)
        if match.group(3) == "countTokens":
            with self._lock:
                self._stats["count_tokens"] += 1
                refused = self._check_key(key) or self._check_model(model, version, "countTokens")
            tokens = math.ceil(len(prompt_text(request)) / 4)
            return refused or (200, {"totalTokens": tokens,
                                     "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]})
        with self._lock:
            self._stats["in_flight"] += 1
            self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._stats["in_flight"])
        try:
            return self._generate(version, model, key, request, headers)
        finally:
            with self._lock:
                self._stats["in_flight"] -= 1

    def _info(self, model: str) -> ModelInfo | None:
        if model in CATALOGUE:
            return CATALOGUE[model]
        if model in self.config.extra_models:
            kind = "pro" if "pro" in model else "flash-lite" if "lite" in model else "flash"
            return ModelInfo(model, model, "3" if model.startswith("gemini-3") else "2.5", kind)
        return None

    def _check_model(self, model: str, version: str, method: str) -> Reply | None:
        info = self._info(model)
        if info is None or (method == "generateContent" and info.kind == "embedding"):
            return not_found(model, version, method)
        return None

    def _models(self, version: str, model: str | None, query: dict[str, list[str]], key: str | None) -> Reply:
        """models.get and models.list (paged as the real list: pageSize up to 1000, opaque nextPageToken)."""
        with self._lock:
            self._stats["model_lookups"] += 1
            refused = self._check_key(key)
            names = [*CATALOGUE, *(m for m in self.config.extra_models if m not in CATALOGUE)]
            infos = [info for info in map(self._info, names) if info is not None]
        if refused:
            return refused
        if model is not None:
            info = self._info(model)
            return (200, resource(info)) if info else not_found(model, version, "get")
        size = min(1000, int((query.get("pageSize") or ["50"])[0]) or 50)
        token = (query.get("pageToken") or [""])[0]
        start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        page: dict[str, Any] = {"models": [resource(i) for i in infos[start:start + size]]}
        if start + size < len(infos):
            page["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return 200, page

    def _redirect(self, token: str) -> Reply:
        target = target_of(token)
        with self._lock:
            self._stats["redirects"] += 1
        if target is None:
            return 404, Raw("<html><body><h1>Not Found</h1></body></html>\n")
        return 302, Raw(f'<HTML><BODY>The document has moved <A HREF="{target}">here</A>.</BODY></HTML>\n',
                        location=target)

    def _check_key(self, key: str | None) -> Reply | None:
        cfg = self.config
        if cfg.require_key and key != cfg.require_key:
            return error_body(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
                {"@type": RPC + "ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                 "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": RPC + "LocalizedMessage", "locale": "en-US",
                 "message": "API key not valid. Please pass a valid API key."}])
        if cfg.deny_key and key == cfg.deny_key:
            return error_body(403, "PERMISSION_DENIED", "Permission denied: Consumer has been suspended.", [
                {"@type": RPC + "ErrorInfo", "reason": "CONSUMER_SUSPENDED", "domain": "googleapis.com"}])
        return None

    def _check_request(self, info: ModelInfo, request: dict[str, Any], grounded: bool) -> tuple[str, Reply] | None:
        """Configuration errors the API reports before generating."""
        config = pick(request, "generationConfig", "generation_config") or {}
        mime = str(pick(config, "responseMimeType", "response_mime_type") or "")
        if grounded and info.generation != "3" and mime == "application/json":
            message = "Tool use with a response mime type: 'application/json' is unsupported"
            return "search_json_400", error_body(400, "INVALID_ARGUMENT", message)
        thinking = pick(config, "thinkingConfig", "thinking_config") or {}
        if info.kind == "pro" and pick(thinking, "thinkingBudget", "thinking_budget") == 0:
            return "thinking_budget_400", error_body(400, "INVALID_ARGUMENT",
                                                     "Budget 0 is invalid. This model only works in thinking mode.")
        return None

    def _refuse(self, version: str, model: str, key: str | None, request: dict[str, Any], prompt: str,
                tokens: int, grounded: bool, now: float) -> tuple[str, Reply] | None:
        """Under the lock: key, model, configuration, poisoned prompt, outage, daily quota, then the windows."""
        cfg = self.config
        refusal = self._check_key(key)
        if refusal:
            return "auth", refusal
        info = self._info(model)
        refusal = self._check_model(model, version, "generateContent")
        if refusal or info is None:
            return ("retired_model" if model in RETIRED else "unknown_model"), refusal or not_found(model, version, "")
        config_error = self._check_request(info, request, grounded)
        if config_error:
            return config_error
        if any(text in prompt for text in cfg.fail_matching):
            return "fail_matching", error_body(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
        if cfg.outage > 0:
            if self._outage_from is None and self._stats["generate"] - self._outage_base > cfg.outage_after:
                self._outage_from = now
            if self._outage_from is not None and now < self._outage_from + cfg.outage:
                return "outage", error_body(503, "UNAVAILABLE", "The service is currently unavailable.")
        if cfg.daily_quota is not None and self._stats["answered"] - self._daily_base >= cfg.daily_quota:
            return "daily_quota", quota_error(model, [("day", cfg.daily_quota)], 3600.0, "3600s", cfg.free_tier)
        quotas = [(kind, window, amount, limit) for kind, window, amount, limit in
                  (("rpm", self._requests, 1, cfg.rpm), ("tpm", self._tokens, tokens, cfg.tpm)) if limit]
        for kind, window, amount, limit in quotas:
            wait = window.wait(now, amount, limit, cfg.window, cfg.window_mode, self._origin)
            if wait is not None:
                return kind, self._window_error(kind, model, limit, wait)
        for _, window, amount, _ in quotas:  # admitted by every quota: only now does it count
            window.record(now, amount, cfg.window_mode)
        return None

    def _window_error(self, kind: str, model: str, limit: int, wait: float) -> Reply:
        cfg = self.config
        if cfg.rpm_delay == "google":
            wait = cfg.window / 3 + self._rng.random() * cfg.window * 2 / 3
            delay = duration(wait, cfg.window)
        elif cfg.rpm_delay == "precise":
            delay = f"{max(0.001, wait):.3f}s"
        else:  # whole seconds, never 0, so that a client honouring it finds the slot free
            delay = f"{max(1, math.ceil(wait))}s"
        return quota_error(model, [("minute" if kind == "rpm" else "tokens", limit)], wait, delay, cfg.free_tier)

    def _draw_fault(self, prompt: str) -> str | None:
        """Under the lock: a matching fault first, then one draw shared by the random faults (each keeps its rate)."""
        cfg = self.config
        for fault in FAULTS:
            if any(text in prompt for text in cfg.fault_matching.get(fault, ())):
                return fault
        draw, edge = self._rng.random(), 0.0
        legacy = (("error", cfg.error_rate), ("rate_limit", cfg.rate_limit_rate), ("timeout", cfg.timeout_rate),
                  ("malformed", cfg.malformed_rate))
        for fault, rate in (*legacy, *((f, cfg.faults.get(f, 0.0)) for f in FAULTS)):
            edge += rate
            if draw < edge:
                return fault
        return None

    def _thoughts(self, info: ModelInfo, config: dict[str, Any], answer_tokens: int, prompt: str) -> int:
        """thoughtsTokenCount: thinking models think unless told not to (2.5 Flash-Lite only when asked)."""
        if not self.config.thinking or info.kind == "embedding":
            return 0
        thinking = pick(config, "thinkingConfig", "thinking_config") or {}
        budget = pick(thinking, "thinkingBudget", "thinking_budget")
        level = str(pick(thinking, "thinkingLevel", "thinking_level") or "").upper()
        if budget == 0 or level == "MINIMAL" or (info.kind == "flash-lite" and budget is None and not level):
            return 0
        factor = {"LOW": 1, "MEDIUM": 2, "HIGH": 4}.get(level, {"pro": 4, "flash": 2, "flash-lite": 1}[info.kind])
        thoughts = factor * (answer_tokens + 8 + digest(f"thoughts\x1f{prompt}") % 32)
        return min(thoughts, budget) if isinstance(budget, int) and budget > 0 else thoughts

    def _grounding(self, prompt: str, text: str, seed: int) -> dict[str, Any]:
        """groundingMetadata: queries, chunks whose uri is a redirect served here, one support, the entry point."""
        h = digest(f"{seed}\x1f{prompt}")
        _, _, firm = firm_of(prompt, seed)
        domain = domain_of(prompt, seed)
        quoted = re.findall(r'"([^"]{3,80})"', prompt.split(SCHEMA_MARKER)[0])
        subject = quoted[0] if quoted else " ".join(prompt.split()[:6])
        queries = [f"{subject} point of contact", f"{subject} {domain} team"][: 1 + h % 2]
        targets = [f"https://www.{domain}/team", f"https://www.linkedin.com/company/{firm}",
                   f"https://www.crunchbase.com/organization/{firm}", f"https://www.{domain}/contact"][: 2 + h % 3]
        chunks = [{"web": {"uri": self.redirect_url(t), "title": (urlsplit(t).hostname or "").removeprefix("www.")}}
                  for t in targets]
        chips = "".join(f'<a class="chip" href="https://www.google.com/search?q={q.replace(" ", "+")}">{q}</a>'
                        for q in queries)
        return {"searchEntryPoint": {"renderedContent": f'<style>.chip {{ display: inline-block; }}</style>'
                                                       f'<div class="container">{chips}</div>'},
                "groundingChunks": chunks,
                "groundingSupports": [{"segment": {"endIndex": len(text.encode()), "text": text},
                                       "groundingChunkIndices": list(range(len(chunks)))}],
                "webSearchQueries": queries}

    def _generate(self, version: str, model: str, key: str | None, request: dict[str, Any], headers: Any) -> Reply:
        prompt = prompt_text(request)
        system = "\n".join(texts_of(pick(request, "systemInstruction", "system_instruction") or []))
        tools = json.dumps(request.get("tools") or [])
        grounded = "google_search" in tools or "googleSearch" in tools
        p_tokens = math.ceil(len(prompt + system) / 4)
        flex = str(pick(request, "serviceTier", "service_tier") or "").lower() == "flex"
        server_timeout = _seconds(headers.get("X-Server-Timeout"))
        with self._lock:
            self._stats["generate"] += 1
            self._stats["by_prompt"][hashlib.sha1(prompt.encode(errors="replace")).hexdigest()[:12]] += 1
            self._stats["by_model"][model] += 1
            refused = self._refuse(version, model, key, request, prompt, p_tokens, grounded, time.monotonic())
            fault = refused[0] if refused else self._draw_fault(prompt)
            cfg = self.config
            jitter = self._rng.uniform(-cfg.jitter, cfg.jitter) if cfg.jitter else 0.0
            wait = cfg.hang_seconds if fault == "timeout" else max(0.0, cfg.latency + jitter) + flex * cfg.flex_latency
            if (not refused and cfg.honor_server_timeout and server_timeout is not None and wait > server_timeout
                    and fault not in (*ERROR_FAULTS, "error", "rate_limit", "timeout")):  # a hang stays a hang
                fault, wait = "deadline_504", server_timeout  # the server gives up at the caller's deadline
            self._stats["faults"].update([fault] if fault else [])
            if fault is None or fault in ("timeout", "malformed", *ANSWER_FAULTS):
                self._stats["answered"] += 1  # counted now, so the daily quota holds under concurrency
            draw, server_error, answer_no = self._rng.random(), self._rng.choice((500, 503)), self._stats["answered"]
            self._stats["grounded"] += grounded and not refused
            self._stats["flex"] += flex and not refused
            info = self._info(model)
        if refused or info is None:
            return refused[1] if refused else not_found(model, version, "generateContent")
        if fault == "error":
            return error_fault("internal_500" if server_error == 500 else "overloaded_503", model, 60, 0, False)
        if fault == "rate_limit":
            return error_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
                              [{"@type": RPC + "RetryInfo", "retryDelay": "1s"}])
        if fault in ERROR_FAULTS and fault != "deadline_504":
            return error_fault(fault, model, cfg.window, draw, cfg.free_tier)
        if wait > 0 and self._stopping.wait(wait):
            return error_body(503, "UNAVAILABLE", "The service is shutting down.")
        if fault == "deadline_504":
            return error_fault(fault, model, cfg.window, draw, cfg.free_tier)
        return 200, self._answer(info, model, request, prompt, p_tokens, fault, grounded, answer_no)

    def _answer(self, info: ModelInfo, model: str, request: dict[str, Any], prompt: str, p_tokens: int,
                fault: str | None, grounded: bool, answer_no: int) -> dict[str, Any]:
        cfg, seed = self.config, self.config.seed
        served = cfg.reroute.get(model) or cfg.reroute.get(info.alias_of or "") or info.alias_of or model
        config = pick(request, "generationConfig", "generation_config") or {}
        json_mode = str(pick(config, "responseMimeType", "response_mime_type") or "") == "application/json"
        schema = requested_schema(request, prompt) or {"type": "object", "properties": {"answer": "string"}}
        value = make_value("answer", schema, prompt, seed, cfg.null_rate)
        body = json.dumps(value, ensure_ascii=False)
        if fault == "malformed":
            body = body[: max(1, len(body) // 2)]  # any strict prefix of a JSON object fails to parse
        if grounded and not json_mode:
            body = wrap(body, cfg.grounded_wrap, prompt)
        max_out = int(pick(config, "maxOutputTokens", "max_output_tokens") or 65_535)
        thoughts = self._thoughts(info, config, math.ceil(len(body) / 4), prompt)
        text: str | None = body
        finish = "STOP"
        if fault == "max_tokens_loop":
            thoughts = min(thoughts, max_out // 2)
            text, finish = loop_text(value, max_out - thoughts), "MAX_TOKENS"
        elif fault == "max_tokens_thinking" or thoughts >= max_out:  # thinking used the whole budget
            thoughts, text, finish = min(max_out, 24_576 if max_out == 65_535 else max_out), None, "MAX_TOKENS"
        elif thoughts + math.ceil(len(body) / 4) > max_out:
            text, finish = body[: (max_out - thoughts) * 4], "MAX_TOKENS"
        c_tokens = math.ceil(len(text) / 4) if text else 0
        tool_use = 60 + digest(f"tool\x1f{prompt}") % 240 if grounded else 0
        cached = math.floor(p_tokens * cfg.cached_fraction)
        reply: dict[str, Any] = {"modelVersion": served, "responseId": f"{digest(f'{seed}:{answer_no}:{prompt}'):016x}"}
        if fault == "blocked":
            feedback: dict[str, Any] = {"blockReason": cfg.block_reason}
            if cfg.block_reason == "SAFETY":
                feedback["safetyRatings"] = SAFETY_RATINGS
            thoughts = c_tokens = tool_use = 0
            reply.update(promptFeedback=feedback)
        elif fault in ("safety", "recitation", "prohibited_content", "blocklist", "spii"):
            candidate: dict[str, Any] = {"finishReason": fault.upper(), "index": 0}
            if fault == "safety":
                candidate["safetyRatings"] = SAFETY_RATINGS
            c_tokens = 0
            reply.update(candidates=[candidate])
        else:
            content: dict[str, Any] = {"role": "model"}
            if text is not None:
                content["parts"] = [{"text": text}]
            candidate = {"content": content, "finishReason": finish, "index": 0}
            if grounded:
                candidate["groundingMetadata"] = self._grounding(prompt, text or "", seed)
            reply.update(candidates=[candidate])
        reply["usageMetadata"] = usage(p_tokens, c_tokens, thoughts, tool_use, cached)
        with self._lock:
            counts = self._stats["tokens"]
            for name, count in (("prompt", p_tokens), ("candidates", c_tokens), ("thoughts", thoughts),
                                ("tool_use", tool_use), ("cached", cached)):
                counts[name] += count
            self._stats["served_by"][served] += 1
            grounding = reply.get("candidates", [{}])[0].get("groundingMetadata")
            if grounding:
                self._stats["search_queries"] += len(grounding["webSearchQueries"])
        return reply


def resource(info: ModelInfo) -> dict[str, Any]:
    """A Model resource as models.get and models.list return it."""
    generate = info.kind != "embedding"
    body: dict[str, Any] = {
        "name": f"models/{info.name}", "version": info.version, "displayName": info.display,
        "description": f"Stand-in for {info.display}" + (f" (currently {info.alias_of})" if info.alias_of else ""),
        "inputTokenLimit": 1_048_576 if generate else 2048, "outputTokenLimit": 65_536 if generate else 1,
        "supportedGenerationMethods": GENERATE_METHODS if generate else EMBED_METHODS}
    if generate:
        body.update(temperature=1, topP=0.95, topK=64, maxTemperature=2, thinking=True)
    return body


def coerce(key: str, value: Any) -> Any:
    """A /_control or CLI value as the config holds it; ValueError for a bad one."""
    if key in FLOATS:
        if key == "window" and float(value or 0) <= 0:
            raise ValueError("window must be more than 0 seconds")
        return float(value or 0)
    if key in OPTIONAL_INTS:
        return None if value is None else int(value)
    if key in ("seed", "outage_after"):
        return int(value)
    if key in BOOLS:
        return value.lower() not in ("0", "false", "no", "off", "") if isinstance(value, str) else bool(value)
    if key in ("fail_matching", "extra_models"):
        return [value] if isinstance(value, str) else [str(v) for v in value or []]
    if key == "reroute":
        return {str(k): str(v) for k, v in dict(value or {}).items()}
    if key in ("faults", "fault_matching"):
        table = dict(value or {})
        if set(table) - set(FAULTS):
            raise ValueError(f"unknown faults: {sorted(set(table) - set(FAULTS))}; known: {', '.join(FAULTS)}")
        if key == "faults":
            return {k: float(v) for k, v in table.items()}
        return {k: [v] if isinstance(v, str) else [str(t) for t in v] for k, v in table.items()}
    if key in CHOICES and value not in CHOICES[key]:
        raise ValueError(f"{key} must be one of {', '.join(CHOICES[key])}, not {value!r}")
    return None if value is None else str(value)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeGemini) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is not worth a traceback
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries its Content-Length
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle meets delayed ACK: +40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake.track(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: callers read stdout
        pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def do_POST(self) -> None:
        self._answer("POST")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unknown method), in Google's format."""
        self.close_connection = True
        status = {404: "NOT_FOUND", 501: "UNIMPLEMENTED"}.get(code, "INVALID_ARGUMENT")
        self._send(*error_body(code, status, message or explain or "Bad request."))

    def _answer(self, method: str) -> None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # cannot tell where this body ends: answer, then hang up
            self._send(*error_body(400, "INVALID_ARGUMENT", "A Content-Length body is required."))
        else:
            body = self.rfile.read(int(length))
            self._send(*self.server.fake.handle(method, self.path, self.headers, body), head=method == "HEAD")

    def _send(self, status: int, payload: dict[str, Any] | Raw, head: bool = False) -> None:
        raw = payload if isinstance(payload, Raw) else Raw(json.dumps(payload), "application/json; charset=UTF-8")
        data = raw.body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", raw.content_type)
            if raw.location:
                self.send_header("Location", raw.location)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)
        except OSError:  # the client gave up (its timeout fired): nobody left to answer
            self.close_connection = True


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> FakeConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="faults: " + ", ".join(FAULTS))
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=0, help="0 picks a free port")
    add("--port-file", help="also write the port number here (atomically)")
    add("--latency", type=float, default=0.0, help="seconds added to each generateContent")
    add("--jitter", type=float, default=0.0, help="uniform +/- seconds added to the latency")
    add("--seed", type=int, default=0, help="seed for answers and random faults")
    add("--rpm", type=int, help="requests per quota window; beyond: 429 RESOURCE_EXHAUSTED with RetryInfo")
    add("--tpm", type=int, help="input tokens per quota window; beyond: 429 on the token quota")
    add("--window", type=float, default=60.0, help="length of the quota window in seconds (default 60)")
    add("--window-mode", choices=CHOICES["window_mode"], default="sliding",
        help="sliding: any WINDOW seconds; fixed: windows aligned to multiples of WINDOW since start")
    add("--rpm-delay", choices=CHOICES["rpm_delay"], default="exact",
        help="retryDelay of quota 429s: exact (whole s until a slot frees), precise (ms), google ([W/3, W])")
    add("--free-tier", action="store_true", help="quota ids and metrics of the free tier (...-FreeTier)")
    add("--daily-quota", type=int, help="after N answers, every request gets a per-day 429")
    add("--error-rate", type=float, default=0.0, help="fraction answered 500 INTERNAL / 503 UNAVAILABLE")
    add("--timeout-rate", type=float, default=0.0, help="fraction that hang for --hang-seconds")
    add("--hang-seconds", type=float, default=30.0)
    add("--malformed-rate", type=float, default=0.0, help="fraction answered with truncated JSON")
    add("--rate-limit-rate", type=float, default=0.0, help="fraction answered 429, retryDelay 1s")
    add("--outage", type=float, default=0.0, help="seconds of 503 UNAVAILABLE for every request ...")
    add("--outage-after", type=int, default=0, help="... once this many generateContent were received")
    add("--fail-matching", action="append", default=[], help="a prompt with TEXT gets 400 (repeatable)")
    add("--fault", action="append", type=_pair, default=[], metavar="NAME=RATE",
        help="answer this fraction of requests with fault NAME (repeatable; names below)")
    add("--fault-matching", action="append", type=_pair, default=[], metavar="NAME=TEXT",
        help="answer every prompt containing TEXT with fault NAME (repeatable)")
    add("--require-key", help="any other API key gets 400 API_KEY_INVALID")
    add("--deny-key", help="this API key gets 403 PERMISSION_DENIED")
    add("--model", dest="extra_models", action="append", default=[], metavar="NAME",
        help="accept this model name besides the built-in catalogue (repeatable)")
    add("--reroute", action="append", type=_pair, default=[], metavar="MODEL=VERSION",
        help="answer requests for MODEL with modelVersion VERSION (repeatable)")
    add("--no-thinking", dest="thinking", action="store_false", help="no thoughtsTokenCount at all")
    add("--cached-fraction", type=float, default=0.0, help="share of prompt tokens reported as cached")
    add("--null-rate", type=float, default=0.0, help="share of nullable fields answered null")
    add("--grounded-wrap", choices=CHOICES["grounded_wrap"], default="mixed",
        help="grounded answers without JSON mode: bare JSON, prose around it, a code fence, or a mix")
    add("--block-reason", choices=CHOICES["block_reason"], default="PROHIBITED_CONTENT",
        help="promptFeedback.blockReason of the 'blocked' fault")
    add("--flex-latency", type=float, default=0.0, help="seconds added to serviceTier flex requests")
    add("--ignore-server-timeout", dest="honor_server_timeout", action="store_false",
        help="never answer 504 because of the X-Server-Timeout header")
    args = vars(parser.parse_args(argv))
    try:
        args["faults"] = coerce("faults", {name: value for name, value in args.pop("fault")})
        matching: dict[str, list[str]] = {}
        for name, text in args.pop("fault_matching"):
            matching.setdefault(name, []).append(text)
        args["fault_matching"] = coerce("fault_matching", matching)
    except ValueError as exc:
        parser.error(str(exc))
    args["reroute"] = dict(args.pop("reroute"))
    return FakeConfig(**args)


def main(argv: list[str] | None = None) -> int:
    fake = FakeGemini(parse_args(argv))
    port = fake.start()
    print(f"fake_gemini listening on http://{fake.config.host}:{port}", flush=True)
    if fake.config.port_file:
        target = Path(fake.config.port_file)
        temp = target.with_name(f".{target.name}.tmp")
        temp.write_text(f"{port}\n")
        temp.replace(target)  # readers never see a half-written port
    done = threading.Event()
    # Both set explicitly: a shell starts background jobs with SIGINT ignored, and `kill` sends TERM.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
