"""The public Python API: `enrich(...)` and `Job(...)`, what `enrich.py` does, for a notebook or a pipeline.

    Job(input, output, stages=..., **options).run() -> RunResult
      options -> (the job's recorded ones on resume) -> plan -> open job (lock, providers, store)
        -> Pipeline.run() -> close (or leave what was abandoned on the wire) -> notify -> RunResult

The library side of the process edge: it registers the keys it reads as secrets, closes what it opened and
releases the lock, and never installs a signal handler, exits the process or prints (unless asked). The CLI
(`enrichkit.cli`) is a thin layer over it: flags in, signals and the exit at the edge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from enrichkit.config.keys import api_key, register_keys
from enrichkit.config.plan import RunOptions
from enrichkit.errors import EXIT_USAGE, EnrichError, UsageError
from enrichkit.logs import log
from enrichkit.run.progress import Figures, Progress
from enrichkit.run.stopping import DRAIN_SECONDS, StopSignal

if TYPE_CHECKING:
    from enrichkit.config.plan import Plan
    from enrichkit.config.stages import StagesConfig
    from enrichkit.providers.base import Provider
    from enrichkit.run.job import Job as OpenJob
    from enrichkit.run.job import Settings

StagesArg = str | os.PathLike[str] | Sequence[Mapping[str, Any]] | Mapping[str, Any] | None

# RunOptions fields that are not options of the library (`stages` is the stages themselves there).
_NOT_OPTIONS = {"input", "output", "stages_file", "stages", "given", "verbose"}
OPTION_NAMES = (*(f.name for f in dataclasses.fields(RunOptions) if f.name not in _NOT_OPTIONS), "select_stages")


@dataclass(frozen=True)
class Event:
    """What a run tells a callback as it goes.

    kind: "line" (a line the CLI would print: the start line, a stop's notice, the closing line, the summary),
    "progress" (`figures` holds done/total/failed/tokens/cost/rate/ETA), "end" (`text` is the closing line)."""

    kind: str
    text: str = ""
    figures: Figures | None = None


@dataclass(frozen=True)
class RunResult:
    """How a run ended. `exit_code` is the one `enrich.py` would exit with (0 every record done, 1 failures, or
    stopped by the provider, a write failure or `limit` with records left, 4 budget reached, 130 interrupted;
    all resumable)."""

    status: str  # the checkpoint's: completed, completed_with_failures, interrupted, budget_exhausted, failed, dry_run
    exit_code: int
    counts: dict[str, int] = field(default_factory=dict)  # the report's: total, completed, failed, pending, ...
    cost_usd: float = 0.0  # the job's cost so far (all runs)
    report: dict[str, Any] = field(default_factory=dict)  # what <output stem>.report.json holds
    message: str = ""  # the closing line
    error: EnrichError | None = None  # what stopped a run early before it began (exit 1: the API unreachable)
    abandoned: int = 0  # records still on the wire when the run left (their threads end with their calls)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Job:
    """One run of a job: `Job(input, output, stages=..., **options).run()`.

    `options` are the CLI's options in snake_case (`resume=True`, `max_workers=10`, `max_cost=5.0`, ...; the
    CLI's `--stages a,b` is `select_stages=["a", "b"]`). `stages` is a stages file's path or a list of stage
    tables (dicts, the file's schema; a python stage's `function` may be a callable); None: on resume, the
    job's recorded stages file, else data/stages.toml.

    `run()` blocks; `stop()` from any other thread (or a callback) stops it gracefully: no new records, those
    in flight finish (up to `drain_seconds`), the checkpoint is written; a second `stop()` abandons them.
    `progress=True` prints the CLI's progress and lines on stderr; `progress=callable` (or `on_event=`) gets
    `Event`s instead. `api_key`: else GEMINI_API_KEY or GOOGLE_API_KEY (environment, or .env in the current
    folder). `providers` replaces the real providers by kind ("llm", "http", "python"), `clock` the time
    (see `enrichkit.testing`). A `Job` is a context manager: leaving the block stops a run still going.
    """

    def __init__(self, input: str | os.PathLike[str], output: str | os.PathLike[str], *, stages: StagesArg = None,
                 api_key: str | None = None, progress: bool | Callable[[Event], None] = False,
                 on_event: Callable[[Event], None] | None = None, confirm: Callable[[str], bool] | None = None,
                 providers: Mapping[str, Provider] | None = None, clock: Callable[[], float] | None = None,
                 drain_seconds: float = DRAIN_SECONDS, **options: Any) -> None:
        self._settings_given: Settings | None = options.pop("_settings", None)  # the CLI's test knobs
        self.options, self._inline = _run_options(input, output, stages, options)
        self._api_key = api_key
        self._print = progress is True
        callbacks = [c for c in (on_event, progress if callable(progress) else None) if c is not None]
        self._callbacks = callbacks
        self._confirm = confirm or (lambda question: False)
        self._providers = dict(providers) if providers is not None else _default_providers()
        self._clock = clock or _default_clock() or time.monotonic
        sleep = getattr(self._clock, "sleep", None)
        self._sleep: Callable[[float], object] = sleep if callable(sleep) else time.sleep
        self._stop = StopSignal(clock=self._clock, drain_seconds=drain_seconds)
        self._waiting: StopSignal | None = None  # the webhook's wait, while it runs
        self._running = False  # records may be in flight: a stop drains them
        self._opening = False  # the plan, the lock, the providers, the models' check: nothing written yet
        self._started = False
        self._searched: list[Path] | None = None  # the .env files looked at for the key
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
        with self._printing():
            result = self._run()
        self.result = result
        self._emit(Event("end", result.message))
        return result

    def _run(self) -> RunResult:
        self._opening = True
        try:
            opened = self._open()
        finally:
            self._opening = False
        return opened if isinstance(opened, RunResult) else self._run_opened(opened)

    def _open(self) -> OpenJob | RunResult:
        """Everything before the first record: options, plan, lock, providers, the models' check, the store."""
        from enrichkit.config.envfiles import load_env_files, with_environment
        from enrichkit.config.plan import check_options, job_paths
        from enrichkit.store.checkpoint import read_checkpoint

        options = self.options
        check_options(options)
        paths = job_paths(options)
        recorded = (read_checkpoint(paths.checkpoint).options
                    if (options.resume or options.retry_failed or options.dry_run) and paths.checkpoint.is_file()
                    else None)
        stages_file = recorded.get("stages_file") if recorded and "stages_file" not in options.given else None
        self._searched = load_env_files(stages_file or options.stages_file or None)  # see enrichkit.config.envfiles
        options = with_environment(options)  # GEMINI_BASE_URL is recorded like base_url=
        if recorded is not None:
            options = options.with_recorded(recorded)
        self.options = options
        stages = self._stages_config()
        if options.dry_run:
            return self._dry_run(stages)
        from enrichkit.config.plan import plan_job
        from enrichkit.run.job import open_job

        register_keys(self._api_key, options.stages_file or None)
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
        if options.fresh and job.store.mode == "new":
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
        result = RunResult(ended.outcome.status, ended.outcome.exit_code, counts=dict(report.get("counts") or {}),
                           cost_usd=float(report.get("cost_usd") or 0.0), report=report,
                           message=ended.outcome.message, abandoned=abandoned)
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
            _write(sys.stdout, text)
        return RunResult("dry_run", code, report={"dry_run": text}, message=text.rstrip().rpartition("\n")[2])

    def _settings(self, *, needs_key: bool) -> Settings:
        from enrichkit.run.job import Settings

        given = self._settings_given or Settings()
        key = self._api_key or (api_key(self._searched) if needs_key else None)
        return dataclasses.replace(given, api_key=key,
                                   base_url=self.options.base_url or os.environ.get("GEMINI_BASE_URL") or None)

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
        return _EventProgress(self._emit, Progress(quiet=not self._print, clock=self._clock))

    @contextlib.contextmanager
    def _printing(self) -> Iterator[None]:
        """progress=True with no logging set up: enrichkit's log lines (progress off a terminal, warnings) go to
        stderr for the run, as the CLI's do."""
        logger = logging.getLogger("enrichkit")
        if not self._print or logging.getLogger().handlers or any(
                not isinstance(h, logging.NullHandler) for h in logger.handlers):
            yield
            return
        from enrichkit.logs import redacting_handler

        handler = redacting_handler()
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)


class _EventProgress(Progress):
    """The run's figures as `Event`s, and drawn as the CLI draws them when asked to print."""

    def __init__(self, emit: Callable[[Event], None], drawn: Progress) -> None:
        self._emit = emit
        self._drawn = drawn

    def start(self, total: int, initial: int) -> None:
        self._drawn.start(total, initial)

    def update(self, f: Figures, *, force: bool = False) -> None:
        self._emit(Event("progress", figures=f))
        self._drawn.update(f, force=force)

    def clear(self) -> None:
        self._drawn.clear()

    def close(self, final: Figures | None = None) -> None:
        if final is not None:
            self._emit(Event("progress", figures=final))
        self._drawn.close(final)


def enrich(input: str | os.PathLike[str], output: str | os.PathLike[str], *, stages: StagesArg = None,
           **options: Any) -> RunResult:
    """Enrich `input` into `output` as `enrich.py` does (same files, checks and guarantees); see `Job`."""
    return Job(input, output, stages=stages, **options).run()


# --- options ----------------------------------------------------------------------------------------


def _run_options(input: str | os.PathLike[str], output: str | os.PathLike[str], stages: StagesArg,
                 options: dict[str, Any]) -> tuple[RunOptions, Sequence[Mapping[str, Any]] | Mapping[str, Any] | None]:
    """`RunOptions` from keyword options (all of them "given": they override a job's recorded ones)."""
    unknown = [name for name in options if name not in OPTION_NAMES]
    if unknown:
        near = difflib.get_close_matches(unknown[0], OPTION_NAMES, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else f" (options: {', '.join(OPTION_NAMES)})"
        raise UsageError(f"unknown option {unknown[0]!r}{hint}")
    values: dict[str, Any] = {k: v for k, v in options.items() if v is not None and k != "select_stages"}
    for name, value in values.items():
        _check_type(name, value)
    selected = options.get("select_stages")
    if selected is not None:
        values["stages"] = [selected] if isinstance(selected, str) else list(selected)
    inline: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None
    if isinstance(stages, str | os.PathLike):
        values["stages_file"] = os.fspath(stages)
    elif stages is not None:
        if not isinstance(stages, Sequence | Mapping) or isinstance(stages, bytes):
            raise UsageError("stages must be a stages file's path or a list of stage tables (dicts)")
        inline = cast("Sequence[Mapping[str, Any]] | Mapping[str, Any]", stages)
        values["stages_file"] = ""
    for name in ("id_columns",):
        if isinstance(values.get(name), str):
            values[name] = [v.strip() for v in values[name].split(",") if v.strip()]
        elif name in values:
            values[name] = list(values[name])
    given = frozenset(values)
    return RunOptions(input=os.fspath(input), output=os.fspath(output), **values, given=given), inline


_TYPES = {f.name: f.type for f in dataclasses.fields(RunOptions)}


def _check_type(name: str, value: Any) -> None:
    kind = str(_TYPES.get(name, ""))
    if kind.startswith("bool"):
        ok = isinstance(value, bool)
    elif kind.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind.startswith("float"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind.startswith("str"):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise UsageError(f"option {name} must be {kind.split(' ')[0]}, not {value!r}")


# --- the test seam ------------------------------------------------------------------------------------

_installed: dict[str, Any] = {}


def _default_providers() -> dict[str, Provider]:
    return dict(_installed.get("providers") or {})


def _default_clock() -> Callable[[], float] | None:
    clock: Callable[[], float] | None = _installed.get("clock")
    return clock


@contextlib.contextmanager
def installed(*, providers: Mapping[str, Provider] | None = None, clock: Callable[[], float] | None = None
              ) -> Iterator[None]:
    """Every `Job` made inside the block (the CLI's too) uses these providers and this clock unless given its
    own: the seam `enrichkit.testing.use` opens for tests of code that makes its Jobs itself."""
    saved = dict(_installed)
    _installed.update({"providers": dict(providers or {}), "clock": clock})
    try:
        yield
    finally:
        _installed.clear()
        _installed.update(saved)


def _write(stream: Any, text: str) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        stream.write(text)
        stream.flush()


__all__ = ["Event", "Job", "RunResult", "enrich"]
