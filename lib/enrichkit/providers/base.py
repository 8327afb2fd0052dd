"""The provider seam: what every kind of stage (Gemini, HTTP, a Python function) offers the pipeline.

    request = provider.prepare(stage, values)   # pure: what to send, its cache key, its model
    answer = provider.call(request)             # one attempt; raises on failure (classified by kind)

Retries, pacing, the circuit breaker and the cache live around `call`, in `enrichkit.run.enricher`;
a provider only knows how to ask and how to read the answer (and, for Gemini, what it cost).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from enrichkit.config.lifecycle import ModelNotes
from enrichkit.config.stages import Stage
from enrichkit.run.counters import Counters


@dataclass
class Usage(Counters):
    """What one answer was billed for: its counters (tokens, grounding, cost), and the model that served it."""

    model: str = ""

    @property
    def grounded(self) -> bool:
        """The answer used Google Search grounding."""
        return bool(self.grounded_prompts)


@dataclass
class Answer:
    """A successful stage call: output fields as strings, and what it cost."""

    fields: dict[str, str]
    usage: Usage = field(default_factory=Usage)
    cached: bool = False


@dataclass(frozen=True)
class Request:
    """One prepared call. `answer_inputs` is everything that decides the answer (the cache key is its hash;
    None: never cached); `model` is the model it calls, which names the limiter and breaker it counts against
    (None: not paced); `input_tokens` is the estimate the limiter reserves before the answer says the real count;
    `worst_cost` what the budget reserves (`enrichkit.pace.budget`)."""

    stage: Stage
    payload: Any
    answer_inputs: dict[str, Any] | None = None
    model: str | None = None
    input_tokens: int = 0
    worst_cost: float = 0.0  # the most one call can cost (USD): reserved against --max-cost before it is sent

    @functools.cached_property
    def cache_key(self) -> str | None:
        if self.answer_inputs is None:
            return None
        blob = json.dumps(self.answer_inputs, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:32]


class Provider(Protocol):
    """What the pipeline needs of a kind of stage. Capabilities a kind may lack (`has_models`: requests name a
    model, a stage may fall back to another, the models are checked before record 1) have their defaults in
    `BaseProvider`, as llm's `Model` declares `supports_schema`: nothing asks `getattr` what a provider can do."""

    kind: str  # "gemini" | "http" | "python": how its errors are classified (`enrichkit.pace.classify`)
    remote: bool  # calls go over the network: paced, guarded by the breaker, cached, abandoned on a stop
    has_models: bool  # requests name a model: `with_model` and `check_models` mean something

    @property
    def notes(self) -> ModelNotes | None: ...  # what its answers said of models: served by another, deprecated

    def prepare(self, stage: Stage, values: dict[str, str]) -> Request: ...

    def call(self, request: Request) -> Answer: ...

    def with_model(self, request: Request, model: str) -> Request: ...

    def check_models(self, models: list[str]) -> None: ...

    def close(self) -> None: ...


class BaseProvider:
    """The defaults of a provider's capabilities: no models, nothing to check, nothing to close."""

    has_models = False
    notes: ModelNotes | None = None

    def with_model(self, request: Request, model: str) -> Request:
        """The same request for another model (a stage's fallback); only for `has_models` providers."""
        raise NotImplementedError(f"{type(self).__name__} has no models to switch between")

    def check_models(self, models: list[str]) -> None:
        """Stop before record 1 when a model cannot be used (unknown, retired, the key refused)."""
        return

    def close(self) -> None:
        return None
