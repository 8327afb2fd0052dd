"""The report (`*.report.json`), written at every exit: what this run did and what the job has done."""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enrichkit.checkpoint import Checkpoint, utc_now

_SAMPLES = 5000  # latency reservoir per stage: percentiles in constant memory


@dataclass
class StageStats:
    succeeded: int = 0
    failed_records: Counter[str] = field(default_factory=Counter)
    attempt_errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seen: int = 0

    def add_latency(self, seconds: float, rng: random.Random) -> None:
        self.seen += 1
        if len(self.latencies) < _SAMPLES:
            self.latencies.append(seconds)
        else:
            j = int(rng.random() * self.seen)
            if j < _SAMPLES:
                self.latencies[j] = seconds

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1) if ordered else None

        return {"succeeded": self.succeeded, "failed_records": dict(self.failed_records),
                "attempt_errors": dict(self.attempt_errors),
                "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99),
                               "max": round(ordered[-1] * 1000, 1) if ordered else None}}


@dataclass
class RunStats:
    """Counters of this run, kept by the runner's main thread only (no lock needed)."""

    fields: list[str]
    started_at: str = field(default_factory=utc_now)
    completed: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    stages: dict[str, StageStats] = field(default_factory=lambda: defaultdict(StageStats))
    filled: Counter[str] = field(default_factory=Counter)
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def add_success(self, values: dict[str, str]) -> None:
        self.completed += 1
        for name in self.fields:
            if values.get(name, "").strip():
                self.filled[name] += 1

    def fill_rates(self) -> dict[str, float | None]:
        return {f: round(self.filled[f] / self.completed, 4) if self.completed else None for f in self.fields}


def build_report(cp: Checkpoint, stats: RunStats, *, exit_code: int, wall_seconds: float,
                 pending: int, message: str) -> dict[str, Any]:
    minutes = wall_seconds / 60
    return {
        "job_id": cp.job_id,
        "status": cp.status,
        "exit_code": exit_code,
        "message": message,
        "started_at": stats.started_at,
        "finished_at": utc_now(),
        "wall_seconds": round(wall_seconds, 3),
        "records_per_minute": round(stats.completed / minutes, 2) if minutes > 0 else None,
        "counts": {
            "total": cp.total_records,
            "completed": cp.completed_count,
            "failed": cp.failed_count,
            "pending": pending,
            "skipped_duplicates": cp.duplicates,
            "input_errors": cp.input_errors,
            "completed_this_run": stats.completed,
            "failed_this_run": stats.failed,
        },
        "requests": stats.requests,
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
        "cache_hits": stats.cache_hits,
        "tokens": {"prompt": stats.prompt_tokens, "output": stats.output_tokens,
                   "total": stats.prompt_tokens + stats.output_tokens},
        "cost_usd": round(stats.cost_usd, 6),
        "job_totals": {"requests": cp.requests, "tokens": cp.total_tokens, "cost_usd": round(cp.cost_usd, 6),
                       "rate_limited": cp.rate_limited, "cache_hits": cp.cache_hits, "runs": cp.runs},
        "stages": {name: s.to_json() for name, s in stats.stages.items()},
        "fill_rates": stats.fill_rates(),
    }


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
