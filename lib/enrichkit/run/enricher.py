"""One record through its stages, on a worker thread: cache, pacing, breaker, retries, and what it cost.

An enricher never writes a job file: it returns a `RecordResult`, and reports each failed attempt
through `on_attempt_error` (given at construction: the job's `Inbox`); the pipeline's main thread hands both to the
job store, which writes and books them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enrichkit.config.stages import Stage
from enrichkit.errors import Abandoned, EnrichError, StageFailure
from enrichkit.logs import log
from enrichkit.pace.breaker import CircuitBreaker
from enrichkit.pace.budget import Budget
from enrichkit.pace.classify import classify_error
from enrichkit.pace.limiter import Limiter
from enrichkit.pace.retry import CallGates, RetryPolicy, call_with_retry, interruptible_sleep
from enrichkit.providers.base import Answer, Provider, Request, Usage
from enrichkit.run.counters import Counters
from enrichkit.run.stopping import StopSignal
from enrichkit.store.cache import ResponseCache
from enrichkit.tables.records import Record
from enrichkit.tables.scan import Position


@dataclass
class AttemptError:
    """One failed attempt, as the error log records it."""

    record_id: str
    row: int
    stage: str
    attempt: int
    error_type: str
    message: str


@dataclass
class RecordResult:
    """What happened to one record. Exactly one of values / failure / abandoned / fatal is set."""

    record_id: str
    row: int
    start: Position = (0, 0)  # where the record starts in the input (for the checkpoint's resume_at)
    values: dict[str, str] | None = None
    failure: StageFailure | None = None
    failed_stage: str | None = None
    abandoned: bool = False
    fatal: EnrichError | None = None
    counters: Counters = field(default_factory=Counters)
    stage_latency: list[tuple[str, float]] = field(default_factory=list)
    skipped_stages: list[str] = field(default_factory=list)  # skip_if_filled: nothing to do
    stage_cost: dict[str, float] = field(default_factory=dict)  # what each stage's calls cost, failures included


Message = list[RecordResult] | AttemptError  # what workers hand the main thread


class Inbox:
    """Where workers leave finished records and failed attempts for the main thread (the single writer of every
    job file), and wake it. Appending to a deque is atomic: nothing a worker finished is lost by a late wake-up."""

    def __init__(self) -> None:
        self.messages: deque[Message] = deque()
        self.woken = threading.Event()

    def put(self, message: Message) -> None:
        self.messages.append(message)


@dataclass
class Enricher:
    """Runs a record's stages in order; shared by all workers (every part is thread-safe).

    `providers` maps a stage kind (llm, python, http) to its provider; `limiters(model)` gives the
    limiter of a model (one per model: quotas are per model); `breakers` one per model, and one for
    the http stages (keyed "http"); `on_attempt_error` hears of each failed attempt (a job's `Inbox.put`:
    the main thread logs it); `stop` is the run's (its calls and waits are given up once it is abandoning).
    """

    providers: dict[str, Provider]
    policy: RetryPolicy
    stop: StopSignal
    on_attempt_error: Callable[[AttemptError], None] = lambda error: None
    limiters: Callable[[str], Limiter | None] = lambda model: None
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    cache: ResponseCache | None = None
    budget: Budget | None = None  # --max-cost: each paid call reserves its worst case before it goes
    delay: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _cache_broken: threading.Event = field(default_factory=threading.Event)
    _switch_lock: threading.Lock = field(default_factory=threading.Lock)
    _falling_back: set[str] = field(default_factory=set)

    def enrich(self, record: Record, record_id: str, stages: list[Stage], start: Position = (0, 0)) -> RecordResult:
        result = RecordResult(record_id, record.row, start)
        given = record.values
        values = dict(given)
        stage: Stage | None = None
        try:
            ran = 0
            for stage in stages:
                if stage.skip_if_filled and all(values.get(f, "").strip() for f in stage.skip_if_filled):
                    result.skipped_stages.append(stage.name)
                    values.update({f: values.get(f, "") for f in stage.fields})
                    continue
                if ran and self.delay:
                    interruptible_sleep(self.delay, self.policy.sleep, self.stop.abandoning)
                ran += 1
                started = self.clock()
                answer = self._run_stage(stage, values, result)
                result.stage_latency.append((stage.name, self.clock() - started))
                values.update(answer.fields)
                # A field that is an input column fills it in place, only where the input left it empty.
                values.update({f: given[f] for f in answer.fields if given.get(f, "").strip()})
            result.values = values
        except Abandoned:
            result.abandoned = True
        except EnrichError as exc:  # auth, quota, billing, outage, configuration: the whole run stops
            result.fatal = exc
        except StageFailure as failure:
            result.failure = failure
            result.failed_stage = stage.name if stage else None
        except Exception as exc:  # noqa: BLE001 - a bug in one record must not end the run
            result.failure = classify_error(exc, provider="python")
            result.failed_stage = stage.name if stage else None
            if stage is not None:
                self._report(result, stage, 1, result.failure)
        return result

    def _run_stage(self, stage: Stage, values: dict[str, str], result: RecordResult) -> Answer:
        provider = self.providers[stage.kind]
        request = provider.prepare(stage, values)
        key = request.cache_key if provider.remote else None
        hit = self._cache_get(key)
        if hit is not None:
            result.counters.cache_hits += 1
            return Answer({name: str(hit["fields"].get(name, "")) for name in stage.output_fields}, cached=True)
        answer, answered = self._call(provider, request, result)
        # Under the key of the request that answered: a fallback model's answer is never read back as the
        # stage model's own.
        self._cache_put(None if key is None else key if answered is request else answered.cache_key, answer)
        return answer

    def _call(self, provider: Provider, request: Request, result: RecordResult) -> tuple[Answer, Request]:
        """The answer and the request that gave it (the stage's model, or its fallback). A remote call's answer
        (and a billed failure's) is charged to the record once; a local call bills nothing."""
        stage = request.stage

        def on_failure(attempt: int, failure: StageFailure) -> None:
            if isinstance(failure.usage, Usage):  # a malformed or blocked answer is still billed
                self._charge(result, stage.name, failure.usage)
            self._report(result, stage, attempt, failure)

        chosen = request
        gates: CallGates | Callable[[], CallGates] | None = None
        if provider.remote:
            fallback = request.stage.fallback_model if provider.has_models else None
            if fallback is None or fallback == request.model:
                gates = self._gates(provider, request)
            else:
                alternate = fallback
                built: list[Request] = []  # the fallback request, made the first time it is needed

                def route() -> CallGates:
                    # Each attempt goes where it can: the stage's model, or its fallback while that model's breaker
                    # is open (a sustained overload), and waits for that model's pace and breaker.
                    nonlocal chosen
                    use = request
                    if self._overloaded(request, alternate):
                        if not built:
                            built.append(provider.with_model(request, alternate))
                        use = built[0]
                    chosen = use
                    return self._gates(provider, use)

                gates = route
        answer = call_with_retry(provider.call, request, policy=self.policy, counters=result.counters,
                                 provider=provider.kind, stop=self.stop, on_failure=on_failure, gates=gates,
                                 budget=self.budget if provider.remote else None)
        if provider.remote:
            self._charge(result, stage.name, answer.usage)
        return answer, chosen

    def _gates(self, provider: Provider, use: Request) -> CallGates:
        """What an attempt of `use` passes: its model's limiter and breaker, what it reserves of the pace and budget."""
        return CallGates(limiter=self.limiters(use.model) if use.model else None,
                         breaker=self.breakers.get(use.model or provider.kind), tokens=use.input_tokens,
                         actual_tokens=lambda answer: answer.usage.prompt_tokens or use.input_tokens,
                         worst_cost=use.worst_cost, cost=_cost, request=use)

    @staticmethod
    def _charge(result: RecordResult, stage: str, usage: Usage) -> None:
        cost = usage.cost_usd
        result.counters.add(usage)
        if cost:
            result.stage_cost[stage] = result.stage_cost.get(stage, 0.0) + cost

    def _overloaded(self, request: Request, fallback: str) -> bool:
        """Is the request's model in a breaker cool-down? Logs each switch to the fallback and back."""
        breaker = self.breakers.get(request.model or "")
        overloaded = breaker is not None and breaker.cooling_down()
        model = request.model or ""
        with self._switch_lock:
            was = model in self._falling_back
            if overloaded and not was:
                self._falling_back.add(model)
            elif was and not overloaded:
                self._falling_back.discard(model)
        if overloaded and not was:
            log.warning("%s is overloaded: stage %s uses %s until it answers again", model, request.stage.name,
                        fallback)
        elif was and not overloaded:
            log.warning("%s answers again: stage %s is back on it", model, request.stage.name)
        return overloaded

    def _report(self, result: RecordResult, stage: Stage, attempt: int, failure: StageFailure) -> None:
        self.on_attempt_error(AttemptError(result.record_id, result.row, stage.name, attempt, failure.error_type,
                                           failure.message))

    # The cache is an optimisation: when it fails, a call is repeated, a record is never failed.

    def _cache_get(self, key: str | None) -> dict[str, Any] | None:
        if key is None or self.cache is None or self._cache_broken.is_set():
            return None
        try:
            return self.cache.get(key)
        except (sqlite3.Error, OSError, ValueError) as exc:
            self._cache_failed(exc)
            return None

    def _cache_put(self, key: str | None, answer: Answer) -> None:
        if key is None or self.cache is None or self._cache_broken.is_set():
            return
        try:
            self.cache.put(key, {"fields": answer.fields, "model": answer.usage.model})
        except (sqlite3.Error, OSError, ValueError) as exc:
            self._cache_failed(exc)

    def _cache_failed(self, exc: BaseException) -> None:
        if not self._cache_broken.is_set():
            self._cache_broken.set()
            log.warning("the response cache failed (%s); carrying on without it: answers are not reused", exc)


def _cost(answered: Any) -> float:
    """What an attempt cost: an answer's usage, or a billed failure's (a malformed or blocked answer)."""
    usage = getattr(answered, "usage", None)
    return usage.cost_usd if isinstance(usage, Usage) else 0.0
