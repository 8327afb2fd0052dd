"""One record through its stages, on a worker thread: cache, pacing, retries, and what it cost.

A worker never writes the output or the checkpoint; it returns a `RecordResult` and the runner's
main thread, the single writer, does the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enrichkit.breaker import CircuitBreaker
from enrichkit.cache import ResponseCache, cache_key
from enrichkit.errorlog import ErrorLog
from enrichkit.errors import EnrichError
from enrichkit.limiter import Limiter
from enrichkit.pricing import Pricing
from enrichkit.providers.answers import Answer
from enrichkit.providers.function import call_function
from enrichkit.providers.gemini import GeminiProvider, full_prompt
from enrichkit.providers.http import HttpProvider
from enrichkit.records import Record
from enrichkit.retry import (
    Abandoned,
    CallStats,
    RetryPolicy,
    StageFailure,
    call_with_retry,
    classify_error,
    interruptible_sleep,
)
from enrichkit.stages import Stage, StagesConfig, render_tree


@dataclass
class RecordResult:
    """What happened to one record. Exactly one of values / failure / abandoned / fatal is set."""

    record_id: str
    row: int
    values: dict[str, str] | None = None
    failure: StageFailure | None = None
    failed_stage: str | None = None
    abandoned: bool = False
    fatal: EnrichError | None = None
    calls: CallStats = field(default_factory=CallStats)
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    stage_latency: list[tuple[str, float]] = field(default_factory=list)
    attempt_errors: list[tuple[str, str]] = field(default_factory=list)  # (stage, error_type)
    logged: list[dict[str, Any]] = field(default_factory=list)  # error-log entries, for the checkpoint's `errors`


@dataclass
class Enricher:
    """Runs a record's stages in order; shared by all workers (its parts are thread-safe)."""

    stages: StagesConfig
    policy: RetryPolicy
    errorlog: ErrorLog
    pricing: Pricing
    should_stop: Callable[[], bool]
    gemini: GeminiProvider | None = None
    http: HttpProvider | None = None
    functions: dict[str, Callable[[dict[str, str]], Any]] = field(default_factory=dict)
    cache: ResponseCache | None = None
    limiter: Limiter | None = None
    breaker: CircuitBreaker | None = None
    model: str | None = None  # --model overrides the stages file's default
    delay: float = 0.0
    # Running estimate of output tokens per LLM stage, for pacing tpm before the answer is known.
    _expected_output: dict[str, int] = field(default_factory=dict)

    def enrich(self, record: Record, record_id: str) -> RecordResult:
        result = RecordResult(record_id, record.row)
        values = dict(record.values)
        stage: Stage | None = None
        try:
            for i, stage in enumerate(self.stages.stages):
                if i and self.delay:
                    interruptible_sleep(self.delay, self.policy.sleep, self.should_stop)
                started = time.monotonic()
                answer = self._run_stage(stage, values, result)
                result.stage_latency.append((stage.name, time.monotonic() - started))
                values.update(answer.fields)
            result.values = values
        except Abandoned:
            result.abandoned = True
        except EnrichError as exc:  # auth, quota, outage: the whole run stops
            result.fatal = exc
        except StageFailure as failure:
            result.failure = failure
            result.failed_stage = stage.name if stage else None
        except Exception as exc:  # noqa: BLE001 - a bug in one record must not end the run
            result.failure = classify_error(exc)
            result.failed_stage = stage.name if stage else None
            result.logged.append(self._log(result, stage, 1, result.failure))
        return result

    def _run_stage(self, stage: Stage, values: dict[str, str], result: RecordResult) -> Answer:
        if stage.kind == "python":
            func = self.functions[stage.name]
            return self._retrying(stage, result, lambda: call_function(stage, func, values))
        if stage.kind == "http":
            assert self.http is not None
            http = self.http
            # Everything the request carries decides its answer (the key is a hash: header secrets are not stored).
            material = {"kind": "http", "method": stage.method, "url": stage.url.render(values) if stage.url else "",
                        "headers": {k: t.render(values) for k, t in stage.headers.items()},
                        "json": render_tree(stage.body, values), "fields": stage.fields}
            return self._cached(material, result, lambda: self._retrying(stage, result,
                                                                         lambda: http.call(stage, values)))
        assert self.gemini is not None and stage.prompt is not None
        gemini = self.gemini
        model = stage.model or self.model or self.stages.model
        temperature = stage.temperature if stage.temperature is not None else self.stages.defaults.get("temperature")
        prompt = full_prompt(stage, stage.prompt.render(values))
        material = {"kind": "llm", "model": model, "temperature": temperature, "prompt": prompt,
                    "fields": stage.fields, "search": stage.search}

        def call() -> Answer:
            return gemini.generate(stage, prompt, model=model, temperature=temperature)

        def estimate() -> int:
            return len(prompt) // 4 + self._expected_output.get(stage.name, 256)

        def actual(answer: Answer) -> int:
            self._expected_output[stage.name] = answer.output_tokens or 1
            return answer.prompt_tokens + answer.output_tokens

        answer = self._cached(material, result, lambda: self._retrying(
            stage, result, call, limiter=self.limiter, breaker=self.breaker, tokens=estimate,
            actual_tokens=actual))
        if not answer.cached:
            self._charge(result, model, answer.prompt_tokens, answer.output_tokens)
        return answer

    def _cached(self, material: dict[str, Any], result: RecordResult, call: Callable[[], Answer]) -> Answer:
        if self.cache is None:
            return call()
        key = cache_key(material)
        hit = self.cache.get(key)
        if hit is not None:
            result.cache_hits += 1
            return Answer(dict(hit["fields"]), cached=True)
        answer = call()
        self.cache.put(key, {"fields": answer.fields, "prompt_tokens": answer.prompt_tokens,
                             "output_tokens": answer.output_tokens})
        return answer

    def _retrying(self, stage: Stage, result: RecordResult, call: Callable[[], Answer], **kwargs: Any) -> Answer:
        def on_failure(attempt: int, failure: StageFailure) -> None:
            if failure.tokens:  # a malformed answer is still billed
                model = stage.model or self.model or self.stages.model
                self._charge(result, model, *failure.tokens)
            result.attempt_errors.append((stage.name, failure.error_type))
            result.logged.append(self._log(result, stage, attempt, failure))

        # A python stage's calls are not API requests; they stay out of the request counts.
        stats = result.calls if stage.kind != "python" else CallStats()
        return call_with_retry(call, policy=self.policy, stats=stats, should_stop=self.should_stop,
                               on_failure=on_failure, **kwargs)

    def _charge(self, result: RecordResult, model: str, prompt_tokens: int, output_tokens: int) -> None:
        result.prompt_tokens += prompt_tokens
        result.output_tokens += output_tokens
        result.cost_usd += self.pricing.cost(model, prompt_tokens, output_tokens)

    def _log(self, result: RecordResult, stage: Stage | None, attempt: int, failure: StageFailure) -> dict[str, Any]:
        return self.errorlog.record(record_id=result.record_id, row=result.row, stage=stage.name if stage else None,
                                    attempt=attempt, error_type=failure.error_type, message=failure.message)
