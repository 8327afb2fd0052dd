"""The stand-in's settings (FakeConfig) and how a CLI or /_control value becomes one."""

from __future__ import annotations

import dataclasses
from typing import Any

from .catalogue import CATALOGUES
from .faults import FAULTS, QUOTA_SHAPES

CHOICES = {"window_mode": ("sliding", "fixed"), "rpm_delay": ("exact", "precise", "google"), "quota_429": QUOTA_SHAPES,
           "grounded_wrap": ("json", "prose", "fence", "mixed"),
           "block_reason": ("SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "IMAGE_SAFETY"),
           "catalogue": CATALOGUES}


@dataclasses.dataclass
class FakeConfig:
    """Behaviour of the stand-in; every fault is off by default. Rates are fractions in [0, 1]."""

    host: str = "127.0.0.1"
    port: int = 0
    port_file: str | None = None
    latency: float = 0.0  # seconds on the stand-in's clock (FakeGemini(clock=...)), as are window and outage
    jitter: float = 0.0
    seed: int = 0
    rpm: int | None = None
    window: float = 60.0  # the quota window in seconds; tests shrink it to make a quota storm quick
    window_mode: str = "sliding"  # sliding: any `window` seconds; fixed: windows aligned to the server's start
    rpm_delay: str = "exact"  # exact: whole seconds until a slot frees; precise: to the ms; google: [w/3, w]
    quota_429: str = "full"  # what the windows' 429s carry: full (QuotaFailure, Help, RetryInfo), retry_info, bare
    tpm: int | None = None  # input tokens per window
    free_tier: bool = False  # quota ids and metrics of the free tier (...-FreeTier)
    daily_quota: int | None = None
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    hang_seconds: float = 30.0  # real seconds (what it tests is the client's timeout, on the real clock)
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
    flex_latency: float = 0.0  # seconds (on the flex clock) added to serviceTier "flex" requests
    flex_scale: float = 1.0  # real seconds per flex-clock second: 0.002 makes a 75 s flex queue take 0.15 s
    catalogue: str = "2026-12"  # today's models: deprecated names routed to their successor, with modelStatus
    model_status: dict[str, str] = dataclasses.field(default_factory=dict)  # model -> "STAGE[@retirementTime]"
    finish_reason: str = "OTHER"  # the finishReason of the "finish" fault (any of the SDK's, or a new one)
    new_project: bool = False  # a project that never used 2.5 Flash/Pro: they list, but answer 404 to it
    date: str | None = None  # the HTTP Date of every answer (ISO date or time, UTC); None: the real clock
    honor_server_timeout: bool = True  # 504 when X-Server-Timeout is shorter than the latency
    # The Batch API (scripts/gemini_standin/batches.py): seconds on its accelerated clock, and "the next N" faults.
    batch_pending: float = 0.05  # seconds a new batch job stays PENDING
    batch_seconds: float = 0.2  # then seconds RUNNING before it ends
    batch_shuffle: bool = True  # output lines in an order of their own (Google's is not reliable)
    batch_list_lag: float = 0.0  # seconds a new job stays out of batches.list
    batch_expire: int = 0  # the next N jobs end EXPIRED
    batch_fail: int = 0  # the next N jobs end FAILED (a configuration reason)
    batch_fail_internal: int = 0  # the next N jobs end FAILED (an internal error: their requests may go again)
    batch_drop_create: int = 0  # the next N creates make the job, then drop the connection
    batch_create_429: int = 0  # the next N creates get a Help-only 429 (enqueued-token quota full)
    batch_line_error_rate: float = 0.0  # share of lines answered with a status (INTERNAL) instead of a response
    batch_line_error_matching: list[str] = dataclasses.field(default_factory=list)  # prompts with a status line
    batch_missing_matching: list[str] = dataclasses.field(default_factory=list)  # prompts with no line at all


FLOATS = {"latency", "jitter", "error_rate", "timeout_rate", "hang_seconds", "malformed_rate",
          "rate_limit_rate", "outage", "window", "cached_fraction", "null_rate", "flex_latency", "flex_scale",
          "batch_pending", "batch_seconds", "batch_list_lag", "batch_line_error_rate"}
OPTIONAL_INTS = {"rpm", "daily_quota", "tpm"}
BOOLS = {"thinking", "free_tier", "honor_server_timeout", "new_project", "batch_shuffle"}
COUNTS = {"batch_expire", "batch_fail", "batch_fail_internal", "batch_drop_create", "batch_create_429"}
RUNTIME_KEYS = {f.name for f in dataclasses.fields(FakeConfig)} - {"host", "port", "port_file"}


def coerce(key: str, value: Any) -> Any:
    """A /_control or CLI value as the config holds it; ValueError for a bad one."""
    if key in FLOATS:
        if key == "window" and float(value or 0) <= 0:
            raise ValueError("window must be more than 0 seconds")
        return float(value or 0)
    if key in OPTIONAL_INTS:
        return None if value is None else int(value)
    if key in ("seed", "outage_after", *COUNTS):
        return int(value)
    if key in BOOLS:
        return value.lower() not in ("0", "false", "no", "off", "") if isinstance(value, str) else bool(value)
    if key in ("fail_matching", "extra_models", "batch_line_error_matching", "batch_missing_matching"):
        return [value] if isinstance(value, str) else [str(v) for v in value or []]
    if key in ("reroute", "model_status"):
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
