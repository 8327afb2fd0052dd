"""Test doubles for code that uses enrichkit, shipped with it (as httpx ships `MockTransport`).

    from enrichkit.testing import FakeClock, FakeProvider

    fake = FakeProvider(outcomes={"Fund 3": [TimeoutError("slow"), {"poc_name": "Ada"}]})
    result = enrichkit.enrich("in.csv", "out.csv", stages="stages.toml", providers={"llm": fake},
                              clock=FakeClock())
    assert fake.calls  # (stage, request text) of every call

`FakeProvider` answers LLM (or http) stages from a script, without a network or a key; `FakeClock` is time
that moves only when something sleeps, so retries, backoff and pacing take no real time. `use(...)` makes
every Job made inside a block take them, the CLI's (`enrichkit.cli.main`) included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from enrichkit.api import installed
from enrichkit.config.stages import Stage
from enrichkit.providers.base import Answer, BaseProvider, Provider, Request, Usage

__all__ = ["Answer", "FakeClock", "FakeProvider", "Request", "Usage", "use"]


class FakeClock:
    """Time that moves only when something sleeps (or a test says so). Thread-safe. Pass it as `clock=`:
    the run reads it and sleeps through its `sleep`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


Outcome = dict[str, Any] | BaseException | Callable[[], dict[str, Any]]


@dataclass
class FakeProvider(BaseProvider):
    """A provider that answers from a script. `outcomes[text]` is a list of what successive calls whose
    request mentions `text` get (a dict of fields, or an exception to raise: `TimeoutError` is a timeout,
    `StageFailure` any classified error); anything else gets `default(stage, values)`, by default every
    field filled with "<field> of <first value>". `calls` records (stage name, request text) of each call.

    Set `kind` to "gemini", "http" or "python" to be classified as that kind of stage; `remote`
    decides whether calls are paced, cached and guarded by the breaker."""

    kind: str = "gemini"
    remote: bool = True
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    default: Callable[[Stage, dict[str, str]], dict[str, Any]] | None = None
    usage: Usage = field(default_factory=lambda: Usage(model="fake-model", prompt_tokens=10, output_tokens=5,
                                                       token_cost_usd=0.001))
    worst_cost: float | None = None  # what a call reserves against max_cost (None: what `usage` costs)
    on_call: Callable[[Request], None] = lambda request: None
    calls: list[tuple[str, str]] = field(default_factory=list)  # (stage, the request's text)
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(self, stage: Stage, values: dict[str, str]) -> Request:
        text = stage.prompt.render(values) if stage.prompt is not None else " ".join(values.values())
        answer_inputs = {"stage": stage.name, "text": text} if self.remote else None
        worst = self.usage.cost_usd if self.worst_cost is None else self.worst_cost
        return Request(stage, {"text": text, "values": dict(values)}, answer_inputs, model="fake-model" if self.remote
                       else None, input_tokens=len(text) // 4 + 1, worst_cost=worst if self.remote else 0.0)

    def call(self, request: Request) -> Answer:
        text = request.payload["text"]
        with self._lock:
            self.calls.append((request.stage.name, text))
            outcome: Outcome | None = None
            for key, queue in self.outcomes.items():
                if key in text and queue:
                    outcome = queue.pop(0)
                    break
        self.on_call(request)
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            outcome = outcome()
        if outcome is None:
            outcome = (self.default or _echo)(request.stage, request.payload["values"])
        return Answer({name: "" if outcome.get(name) is None else str(outcome[name])
                       for name in request.stage.fields}, self.usage)

    def close(self) -> None:
        self.closed = True


def _echo(stage: Stage, values: dict[str, str]) -> dict[str, Any]:
    first = next(iter(values.values()), "")
    return {name: f"{name} of {first}" for name in stage.fields}


@contextmanager
def use(*, providers: Mapping[str, Provider] | None = None, clock: Callable[[], float] | None = None
        ) -> Iterator[None]:
    """Every Job made in the block (the CLI's too) gets these providers (by kind of stage: "llm", "http",
    "python") and this clock, unless given its own. Kinds not named get the real providers."""
    with installed(providers=providers, clock=clock):
        yield
