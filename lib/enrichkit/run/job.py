"""Opening a job: the lock, the providers and their check before record 1, the store, the enricher.

`open_job` turns a plan into everything a `Pipeline` needs, in the order that keeps a failure cheap:
nothing is written before the lock is held and the models are known to exist.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enrichkit.config.lifecycle import check_models
from enrichkit.config.plan import Plan
from enrichkit.errors import AuthError
from enrichkit.logs import log
from enrichkit.pace.breaker import CircuitBreaker
from enrichkit.pace.budget import Budget
from enrichkit.pace.limiter import Limiter
from enrichkit.pace.retry import RetryPolicy
from enrichkit.providers.base import Provider
from enrichkit.run.enricher import Enricher, Inbox
from enrichkit.run.stopping import StopSignal
from enrichkit.store.cache import ResponseCache, open_cache
from enrichkit.store.jobstore import JobStore
from enrichkit.store.runlock import RunLock


@dataclass(frozen=True)
class Settings:
    """What a run takes from its environment (read by the CLI, never by the library)."""

    api_key: str | None = None
    base_url: str | None = None  # --base-url, else GEMINI_BASE_URL
    backoff_base: float = 1.0  # first backoff step in seconds (tests shorten it)
    quota_window: float | None = None  # seconds a quota counts over (60; tests against a faster stand-in shorten it)
    batch_chunk: int = 5000  # --batch: requests per Google batch job (ENRICHKIT_BATCH_CHUNK)
    batch_settle: float = 60.0  # --batch: seconds a create in doubt may stay unlisted (ENRICHKIT_BATCH_SETTLE)
    batch_crash_at: Callable[[str], None] | None = None  # --batch: the crash tests' hook (ENRICHKIT_BATCH_CRASH_AT)


@dataclass
class Job:
    plan: Plan
    lock: RunLock
    store: JobStore
    enricher: Enricher
    providers: dict[str, Provider]
    inbox: Inbox = field(default_factory=Inbox)  # the workers' messages to the main thread (the enricher's too)
    limiters: dict[str, Limiter] = field(default_factory=dict)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    cache: ResponseCache | None = None

    def pace(self) -> dict[str, Any]:
        """Each model's limiter figures (configured and current pace, pauses), for the checkpoint and report."""
        return {model: limiter.snapshot() for model, limiter in sorted(self.limiters.items())}

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()
        if self.cache is not None:
            with contextlib.suppress(Exception):
                self.cache.close()
        self.lock.release()


def open_job(plan: Plan, settings: Settings, *, stop: StopSignal, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], object] = time.sleep, confirm_fresh: Callable[[str], bool] = lambda q: False,
             providers: dict[str, Provider] | None = None, checked: Callable[[], None] = lambda: None) -> Job:
    """Take the lock, build (or take) the providers, open the store, and wire the enricher.

    `providers` replaces the real ones (tests pass fakes); `checked` is told when the models are checked and the
    store opens next. Raises `LockedError` (exit 3) or any error the
    store's open raises (exit 2); on failure everything taken is given back.
    """
    paths, options = plan.paths, plan.options
    created_folder = not paths.output.parent.exists()
    paths.output.parent.mkdir(parents=True, exist_ok=True)
    lock = RunLock(paths.lock, paths.output, paths.checkpoint)
    lock.acquire()
    built: dict[str, Provider] = {}
    try:
        limiters = make_limiters(plan, clock=clock, sleep=sleep, window=settings.quota_window)
        # One breaker per model (an overloaded model must not stop a stage on another, and a stage with a
        # fallback model switches while its own is open) and one for the http stages.
        breakers = {key: CircuitBreaker(max_outage=options.max_outage, clock=clock, sleep=sleep,
                                        on_event=_breaker_log(key)) for key in [*limiters, "http"]}
        built = providers if providers is not None else build_providers(plan, settings)
        if "llm" in built:
            built["llm"].check_models(plan.stages.models(options.model))  # unknown, retired, a bad key: stop now
        plan.check_prices()
        checked()
        store = JobStore.open(plan, confirm_fresh=confirm_fresh, relock=lock.relock_output, clock=clock)
        notes = built["llm"].notes if "llm" in built else None
        if notes is not None:
            check_models(plan.stages, options.model, plan.pricing, notes)  # a deprecated model: one warning
        plan.pricing.used_grounding(store.cp.totals.search_queries or store.cp.totals.grounded_prompts)
        remote = [p for p in built.values() if p.remote]
        cache = open_cache(paths.cache) if remote and not options.no_cache else None
        policy = RetryPolicy(max_retries=options.max_retries, base=settings.backoff_base, sleep=sleep)
        budget = Budget(options.max_cost, store.cp.totals.cost_usd + store.cp.unsettled_usd)
        inbox = Inbox()
        enricher = Enricher(providers=built, policy=policy, stop=stop, limiters=limiters.get,
                            breakers=breakers, cache=cache, budget=budget, delay=options.delay, clock=clock,
                            on_attempt_error=inbox.put)
    except BaseException:
        for provider in built.values():
            provider.close()
        lock.release()
        if created_folder:  # a start that failed (an unknown model, a signal) leaves no empty folder behind
            with contextlib.suppress(OSError):
                paths.output.parent.rmdir()
        raise
    return Job(plan, lock, store, enricher, built, inbox, limiters, breakers, cache)


def _breaker_log(key: str) -> Callable[[str], None]:
    def event(message: str) -> None:
        log.warning("%s: %s", key, message)
    return event


def build_providers(plan: Plan, settings: Settings, kinds: set[str] | None = None) -> dict[str, Provider]:
    """The real providers for the kinds of stage the plan has (or `kinds` of them); the SDK is imported only
    for llm stages."""
    kinds = {s.kind for s in plan.stages.stages} if kinds is None else kinds
    providers: dict[str, Provider] = {}
    if "python" in kinds:
        from enrichkit.providers.function import FunctionProvider

        providers["python"] = FunctionProvider(plan.functions)
    if "http" in kinds:
        from enrichkit.providers.http import HttpProvider

        providers["http"] = HttpProvider(timeout=plan.options.timeout)
    if "llm" in kinds:
        from enrichkit.providers.gemini import GeminiProvider

        if settings.api_key is None:
            raise AuthError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment or in a .env file")
        providers["llm"] = GeminiProvider(api_key=settings.api_key, base_url=settings.base_url,
                                          timeout=plan.options.timeout, stages=plan.stages, pricing=plan.pricing,
                                          model=plan.options.model)
    return providers


def make_limiters(plan: Plan, *, clock: Callable[[], float], sleep: Callable[[float], object],
                  window: float | None = None) -> dict[str, Limiter]:
    """One limiter per model (Gemini meters quotas per project per model). rpm/tpm: --rpm/--tpm, else the
    stage's own, else [defaults]."""
    options = plan.options
    limits = plan.stages.limits(options.model, options.rpm, options.tpm)
    return {model: Limiter(rpm, tpm, window=window, clock=clock, sleep=sleep, on_event=_pace_log(model))
            for model, (rpm, tpm) in limits.items()}


def _pace_log(model: str) -> Callable[[str, dict[str, Any]], None]:
    """A limiter's events as log lines: a 429 pausing the workers, the pace cut or recovering."""

    def event(name: str, fields: dict[str, Any]) -> None:
        message = fields.get("message") or f"{name} {fields}"
        # A pause of every worker or a cut pace is news; a 1 s hold at a fixed window's end can come every window.
        (log.warning if name in ("pause", "decrease") else log.info)("%s: %s", model, message)

    return event
