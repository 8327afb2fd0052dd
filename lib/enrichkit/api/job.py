"""`Job`: one run of a job from Python, opened, run, closed and notified; `enrich(...)` runs one.

    Job.run -> _open (options, recorded options, environment, plan, lock, providers, models' check, store)
            -> _run_opened (Pipeline.run or batch_run) -> close -> notify -> RunResult
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from enrichkit.api.options import StagesArg, run_options
from enrichkit.api.result import Event, EventProgress, RunResult, stderr_logging, write
from enrichkit.api.seam import default_clock, default_providers
from enrichkit.config.envfiles import Environment
from enrichkit.config.keys import api_key, register_keys
from enrichkit.config.plan import JobMode
from enrichkit.errors import EXIT_USAGE, EnrichError, UsageError
from enrichkit.logs import log
from enrichkit.run.progress import Progress
from enrichkit.run.stopping import DRAIN_SECONDS, StopSignal

if TYPE_CHECKING:
    from enrichkit.config.plan import Plan
    from enrichkit.config.stages import StagesConfig
    from enrichkit.providers.base import Provider
    from enrichkit.run.job import Job as OpenJob
    from enrichkit.run.job import Settings


class Job:
    """One run of a job: `Job(input, output, stages=..., **options).run()`.

    `options` are the CLI's options in snake_case (`resume=True`, `max_workers=10`, `max_cost=5.0`, ...; the
    CLI's `--stages a,b` is `select_stages=["a", "b"]`). `stages` is a stages file's path or a list of stage
    tables (dicts, the file's schema; a python stage's `function` may be a callable); None: on resume, the
    job's recorded stages file, else data/stages.toml.

    `run()` blocks; `stop()` from any other thread (or a callback) stops it gracefully: no new records, those
    in flight finish (up to `drain_seconds`), the checkpoint is written; a second `stop()` abandons them.
    `progress=True` prints the CLI's progress and lines on stderr; `progress=callable` (or `on_event=`) gets
    `Event`s instead. `api_key`: else GEMINI_API_KEY or GOOGLE_API_KEY from the environment, else from the
    .env files (read, never loaded into `os.environ`: `enrichkit.config.envfiles`). `providers` replaces the
    real providers by kind ("llm", "http", "python"), `clock` the time (see `enrichkit.testing`).
    A `Job` is a context manager: leaving the block stops a run still going.
    """

    def __init__(self, input: str | os.PathLike[str], output: str | os.PathLike[str], *, stages: StagesArg = None,
                 api_key: str | None = None, progress: bool | Callable[[Event], None] = False,
                 on_event: Callable[[Event], None] | None = None, confirm: Callable[[str], bool] | None = None,
                 providers: Mapping[str, Provider] | None = None, clock: Callable[[], float] | None = None,
                 drain_seconds: float = DRAIN_SECONDS, **options: Any) -> None:
        self._settings_given: Settings | None = options.pop("_settings", None)  # the CLI's test knobs
        # The CLI's: told the environment read (the CLI exports the .env files' variables into its process).
        self._on_environment: Callable[[Environment], None] | None = options.pop("_on_environment", None)
        self.options, self._inline = run_options(input, output, stages, options)
        self._api_key = api_key
        self._print = progress is True
        callbacks = [c for c in (on_event, progress if callable(progress) else None) if c is not None]
        self._callbacks = callbacks
        self._confirm = confirm or (lambda question: False)
        self._providers = dict(providers) if providers is not None else default_providers()
        self._clock = clock or default_clock() or time.monotonic
        sleep = getattr(self._clock, "sleep", None)
        self._sleep: Callable[[float], object] = sleep if callable(sleep) else time.sleep
        self._stop = StopSignal(clock=self._clock, drain_seconds=drain_seconds)
        self._waiting: StopSignal | None = None  # the webhook's wait, while it runs
        self._running = False  # records may be in flight: a stop drains them
        self._opening = False  # the plan, the lock, the providers, the models' check: nothing written yet
        self._started = False
        self._env = Environment()  # the environment and the .env files, as read when the run opens
        self.result: RunResult | None = None

    # --- control -----------------------------------------------------------------------------------

    def stop(self, reason: str = "stop()") -> None:
        """Stop gracefully (safe from any thread, or a signal handler): the first call drains the records in
        flight, a second abandons them. Before the run begins, the run then starts no record (exit 130)."""
        waiting = self._waiting
        if waiting is not None:
            waiting.interrupt(reason)
            return
        self._stop.interrupt(reason)

    @property
    def running(self) -> bool:
        """Records may be in flight (a stop now drains them)."""
        return self._running

    @property
    def opening(self) -> bool:
        """`run()` is still reading the options and the input's header, taking the lock, building the providers or
        checking the models: nothing is written yet (the CLI's signal handler stops the run at once then, instead
        of asking it to drain)."""
        return self._opening

    def __enter__(self) -> Job:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
                 ) -> None:
        if self._running:
            self.stop()

    # --- the run -----------------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run the job to its end and say how it ended. Raises `EnrichError` subclasses where the CLI exits 2
        or 3 (`ConfigError`, `InputError`, `AuthError`, `LockedError`, `UsageError`)."""
        if self._started:
            raise UsageError("this Job has run already; make a new Job (with resume=True) to run it again")
        self._started = True
        with stderr_logging(self._print):
            result = self._run()
        self.result = result
        self._emit(Event("end", result.message))
        return result

    def _run(self) -> RunResult:
        self._opening = True
        try:
            opened = self._open()
        except OSError as exc:  # a folder or file the job needs cannot be made or read: the CLI's exit 2
            where = f"{exc.filename}: " if exc.filename else ""
            raise UsageError(f"{where}{exc.strerror or exc}") from exc
        finally:
            self._opening = False
        return opened if isinstance(opened, RunResult) else self._run_opened(opened)

    def _open(self) -> OpenJob | RunResult:
        """Everything before the first record: options, plan, lock, providers, the models' check, the store."""
        from enrichkit.config.envfiles import read_environment, with_environment
        from enrichkit.config.plan import check_options, job_paths
        from enrichkit.store.checkpoint import read_checkpoint

        options = self.options
        check_options(options)
        paths = job_paths(options)
        recorded = (read_checkpoint(paths.checkpoint).options
                    if (options.resume or options.retry_failed or options.dry_run) and paths.checkpoint.is_file()
                    else None)
        stages_file = recorded.get("stages_file") if recorded and "stages_file" not in options.given else None
        self._env = env = read_environment(stages_file or options.stages_file or None)  # read, never exported
        if self._on_environment is not None:
            self._on_environment(env)
        options = with_environment(options, env)  # GEMINI_BASE_URL is recorded like base_url=
        if recorded is not None:
            options = options.with_recorded(recorded)
        self.options = options
        stages = self._stages_config()
        if options.dry_run:
            return self._dry_run(stages)
        from enrichkit.config.plan import plan_job
        from enrichkit.run.job import open_job

        register_keys(self._api_key, env)
        plan = plan_job(options, check_prices=False, stages=stages)  # prices: once the models are known to exist
        settings = self._settings(needs_key=plan.llm and "llm" not in self._providers)
        providers = self._providers_for(plan, settings) if self._providers else None
        self._batch_settings = settings
        if options.batch_detach and not options.batch:  # after the job's recorded options: --batch may be one
            raise UsageError("--batch-detach works with --batch only (submit and collect, then exit 5 while Google "
                             "batch jobs run)")
        from enrichkit.batch.start import before_open

        # --fresh refuses while Google jobs run (or cancels them: --cancel-batches); so does a run without --batch
        before_open(plan, settings)
        try:
            return open_job(plan, settings, stop=self._stop, clock=self._clock, sleep=self._sleep,
                            confirm_fresh=self._confirm, providers=providers, checked=self._checked)
        except EnrichError as exc:
            if exc.exit_code in (EXIT_USAGE, 3):
                raise
            # Stopped before it began, resumably (nobody listens at the API's address: exit 1).
            return RunResult("failed", exc.exit_code, message=f"Stopped: {exc}", error=exc)

    def _checked(self) -> None:
        """The models exist: the store opens next, and from here on a stop drains (writes stay whole)."""
        self._opening = False

    def _run_opened(self, job: OpenJob) -> RunResult:
        from enrichkit.run.pipeline import Pipeline

        plan = job.plan
        options = plan.options
        abandoned = 0
        if options.fresh and job.store.mode == JobMode.NEW:
            from enrichkit.batch.start import remove_ledger

            remove_ledger(plan.paths.output)  # the old job's batch ledger goes with its output and checkpoint
        # --cancel-batches cancels this job's Google jobs; with --fresh that happened before the old job was discarded.
        batch = options.batch or (options.cancel_batches and not options.fresh)
        try:
            self._running = True
            if batch:
                from enrichkit.batch.start import batch_run

                settings = self._batch_settings
                ended = batch_run(plan, job, settings, stop=self._stop, progress=self._progress(), say=self._say,
                                  chunk_lines=settings.batch_chunk, settle=settings.batch_settle,
                                  crash_at=settings.batch_crash_at or (lambda point: None), clock=self._clock,
                                  sleep=self._sleep)
            else:
                pipeline = Pipeline(plan, job.store, job.enricher, stop=self._stop, inbox=job.inbox,
                                    progress=self._progress(), clock=self._clock, say=self._say, pace=job.pace)
                ended = pipeline.run()
            abandoned = ended.abandoned
        finally:
            self._running = False
            if abandoned:
                # Records abandoned at the drain deadline are still on the wire (their threads end with their
                # calls); everything durable is written. Their providers and cache stay open for them.
                job.lock.release()
            else:
                job.close()
        report = ended.report
        result = RunResult(ended.verdict.status, ended.verdict.exit_code, counts=dict(report.get("counts") or {}),
                           cost_usd=float(report.get("cost_usd") or 0.0), report=report,
                           message=ended.verdict.message, abandoned=abandoned)
        self._notify(plan.options.notify_url or plan.stages.defaults.get("notify_url"), report, job)
        return result

    def _stages_config(self) -> StagesConfig | None:
        if self._inline is None:
            return None
        from enrichkit.config.stages import stages_from_python

        return stages_from_python(self._inline)

    def _dry_run(self, stages: StagesConfig | None) -> RunResult:
        from enrichkit.run.dryrun import dry_run

        out = io.StringIO()
        code = dry_run(self.options, out, stages=stages)
        text = out.getvalue()
        for line in text.splitlines():
            self._emit(Event("line", line))
        if self._print:
            write(sys.stdout, text)
        return RunResult("dry_run", code, report={"dry_run": text}, message=text.rstrip().rpartition("\n")[2])

    def _settings(self, *, needs_key: bool) -> Settings:
        from enrichkit.run.job import Settings

        given = self._settings_given or Settings()
        key = self._api_key or (api_key(self._env) if needs_key else None)
        return dataclasses.replace(given, api_key=key,
                                   base_url=self.options.base_url or self._env.get("GEMINI_BASE_URL") or None)

    def _providers_for(self, plan: Plan, settings: Settings) -> dict[str, Provider]:
        """The providers given (by kind of stage), and the real ones for the kinds they leave out."""
        from enrichkit.run.job import build_providers

        kinds = {s.kind for s in plan.stages.stages}
        missing = kinds - set(self._providers)
        built = build_providers(plan, settings, kinds=missing) if missing else {}
        return {kind: self._providers.get(kind) or built[kind] for kind in kinds}

    def _notify(self, url: str | None, report: dict[str, Any], job: OpenJob) -> None:
        """--notify-url: one POST of the summary after the files are closed and the lock released; it never
        changes the result, and a stop while it waits abandons it at once."""
        if not url:
            return
        from enrichkit.run.notify import notify_run_end

        self._waiting = StopSignal(drain_seconds=0)
        try:
            warning = notify_run_end(url, report, job.plan.paths, should_stop=self._waiting, sleep=self._sleep,
                                     clock=self._clock)
        finally:
            self._waiting = None
        if warning:
            log.warning("%s", warning)

    # --- what the run says ---------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        for callback in self._callbacks:
            callback(event)

    def _say(self, text: str) -> None:
        for line in text.splitlines() or [text]:
            self._emit(Event("line", line))
        if self._print:
            from enrichkit.logs import say

            say(text)

    def _progress(self) -> Progress:
        return EventProgress(self._emit, Progress(quiet=not self._print, clock=self._clock))


def enrich(input: str | os.PathLike[str], output: str | os.PathLike[str], *, stages: StagesArg = None,
           **options: Any) -> RunResult:
    """Enrich `input` into `output` as `enrich.py` does (same files, checks and guarantees); see `Job`."""
    return Job(input, output, stages=stages, **options).run()

