"""What calls cost and did, counted the same way for one answer, one record, one run and the whole job:
`Counters` (requests, tokens, cost; an answer's own are its `providers.base.Usage`) and `StageTotals` (one stage's
records, failures and cost), kept by stage in a `StageTable` (the checkpoint's `stage_totals`, the report's)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

_SAMPLES = 5000  # latency reservoir per stage: percentiles in constant memory


@dataclass
class Counters:
    """Additive figures. An answer's `Usage` is one, a record's `RecordResult` carries their sum, the run sums
    those, and the checkpoint keeps the job's sum over every run (its JSON keys are flat, as SPEC names them)."""

    requests: int = 0  # API requests sent (LLM and HTTP; a python stage is no request)
    retries: int = 0  # requests beyond the first of a call
    rate_limited: int = 0  # answers that were 429
    cache_hits: int = 0
    prompt_tokens: int = 0  # billed input tokens (tool-use prompt tokens included)
    output_tokens: int = 0  # billed output tokens (thinking included)
    thinking_tokens: int = 0  # of which thinking
    cached_tokens: int = 0  # input tokens served from Google's context cache (billed at a discount)
    grounded_prompts: int = 0  # answers that used Google Search grounding
    search_queries: int = 0  # the search queries those answers ran
    token_cost_usd: float = 0.0
    grounding_cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    @property
    def cost_usd(self) -> float:
        """Everything billed: tokens and grounding fees."""
        return self.token_cost_usd + self.grounding_cost_usd

    def add(self, other: Counters) -> None:
        for name in _NAMES:  # twice per record on the main thread: the names are looked up once
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in _NAMES}
        for key in ("token_cost_usd", "grounding_cost_usd"):
            data[key] = round(data[key], 6)
        data["total_tokens"] = self.total_tokens
        data["cost_usd"] = round(self.cost_usd, 6)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Counters:
        """Read the flat keys back; an older checkpoint without the split of its cost keeps it as tokens."""
        counters = cls()
        for f in fields(Counters):
            value = data.get(f.name)
            if value is not None:
                setattr(counters, f.name, float(value) if f.type == "float" else int(value))
        if "token_cost_usd" not in data and data.get("cost_usd") is not None:
            counters.token_cost_usd = float(data["cost_usd"])
        return counters


_NAMES = tuple(f.name for f in fields(Counters))


@dataclass
class StageTotals:
    """One stage's figures, for one run or the whole job: records it finished, skipped (`skip_if_filled`) and failed
    (by error type), failed attempts (by error type), what its calls cost (the job's), and a sample of its call times
    (a run's; never in the checkpoint)."""

    succeeded: int = 0
    skipped: int = 0
    failed_records: Counter[str] = field(default_factory=Counter)
    attempt_errors: Counter[str] = field(default_factory=Counter)
    cost_usd: float = 0.0
    latencies: list[float] = field(default_factory=list)
    timed: int = 0  # calls whose time was offered to the sample

    def add_latency(self, seconds: float, rng: random.Random) -> None:
        self.timed += 1
        if len(self.latencies) < _SAMPLES:
            self.latencies.append(seconds)
        else:
            j = int(rng.random() * self.timed)
            if j < _SAMPLES:
                self.latencies[j] = seconds

    def latency_ms(self) -> dict[str, float | None]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1) if ordered else None

        return {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99),
                "max": round(ordered[-1] * 1000, 1) if ordered else None}

    def to_json(self) -> dict[str, Any]:
        """As the checkpoint keeps it (`cost_usd` once the stage cost something)."""
        data: dict[str, Any] = {"succeeded": self.succeeded, "skipped": self.skipped,
                                "failed_records": dict(self.failed_records),
                                "attempt_errors": dict(self.attempt_errors)}
        if self.cost_usd:
            data["cost_usd"] = self.cost_usd
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageTotals:
        return cls(succeeded=int(data.get("succeeded") or 0), skipped=int(data.get("skipped") or 0),
                   failed_records=_counts(data.get("failed_records")),
                   attempt_errors=_counts(data.get("attempt_errors")),
                   cost_usd=float(data.get("cost_usd") or 0.0))


class StageTable(dict[str, StageTotals]):
    """Stage name -> its `StageTotals`; a stage not yet seen starts at zero when booked."""

    def __missing__(self, name: str) -> StageTotals:
        entry = self[name] = StageTotals()
        return entry

    def add_record(self, stage_latency: list[tuple[str, float]], skipped: list[str], stage_cost: dict[str, float],
                   failed_stage: str | None, failure_type: str | None, *, sample: random.Random | None = None) -> None:
        """One finished (or failed, or abandoned) record; `sample` draws its call times into a run's latencies."""
        for name, seconds in stage_latency:
            entry = self[name]
            entry.succeeded += 1
            if sample is not None:
                entry.add_latency(seconds, sample)
        for name in skipped:
            self[name].skipped += 1
        for name, cost in stage_cost.items():
            entry = self[name]
            entry.cost_usd = round(entry.cost_usd + cost, 9)
        if failure_type is not None:
            self[failed_stage or "?"].failed_records[failure_type] += 1

    def add_attempt_error(self, stage: str, error_type: str) -> None:
        self[stage].attempt_errors[error_type] += 1

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {name: totals.to_json() for name, totals in self.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> StageTable:
        return cls({str(name): StageTotals.from_json(dict(entry)) for name, entry in (data or {}).items()})


def _counts(data: Mapping[str, Any] | None) -> Counter[str]:
    return Counter({str(key): int(n) for key, n in (data or {}).items()})
