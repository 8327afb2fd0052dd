"""What calls cost and did, counted the same way for one record, one run and the whole job."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class Counters:
    """Additive figures. A record's `RecordResult` carries one, the run sums them, and the checkpoint
    keeps the job's sum over every run (its JSON keys are flat, as SPEC names them)."""

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
        data: dict[str, Any] = asdict(self)
        for key in ("token_cost_usd", "grounding_cost_usd"):
            data[key] = round(data[key], 6)
        data["total_tokens"] = self.total_tokens
        data["cost_usd"] = round(self.cost_usd, 6)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Counters:
        """Read the flat keys back; an older checkpoint without the split of its cost keeps it as tokens."""
        counters = cls()
        for f in fields(cls):
            value = data.get(f.name)
            if value is not None:
                setattr(counters, f.name, float(value) if f.type == "float" else int(value))
        if "token_cost_usd" not in data and data.get("cost_usd") is not None:
            counters.token_cost_usd = float(data["cost_usd"])
        return counters


_NAMES = tuple(f.name for f in fields(Counters))
