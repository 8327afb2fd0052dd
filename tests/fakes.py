"""Fakes shared by the tests: a clock, a provider (as simonw/llm's MockModel), the CLI run in-process,
and the exactly-once checks every durability test makes."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enrichkit.providers.base import Answer, Request, Usage
from enrichkit.stages import Stage


class FakeClock:
    """Time that moves only when something sleeps (or a test says so). Thread-safe."""

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
class FakeProvider:
    """A provider that answers from a script. `outcomes[text]` is a list of what successive calls whose
    request mentions `text` get (a dict of fields, or an exception to raise); anything else gets
    `default(stage, values)`, by default every field filled with "<field> of <first value>".

    Set `kind` to "gemini", "http" or "python" to be classified as that kind of stage; `remote`
    decides whether calls are paced, cached and guarded by the breaker."""

    kind: str = "gemini"
    remote: bool = True
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    default: Callable[[Stage, dict[str, str]], dict[str, Any]] | None = None
    usage: Usage = field(default_factory=lambda: Usage(model="fake-model", prompt_tokens=10, output_tokens=5,
                                                       token_cost_usd=0.001))
    worst_cost: float | None = None  # what a call reserves against --max-cost (None: what `usage` costs)
    on_call: Callable[[Request], None] = lambda request: None
    calls: list[tuple[str, str]] = field(default_factory=list)  # (stage, the request's text)
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(self, stage: Stage, values: dict[str, str]) -> Request:
        text = stage.prompt.render(values) if stage.prompt is not None else " ".join(values.values())
        material = {"stage": stage.name, "text": text} if self.remote else None
        worst = self.usage.counters().cost_usd if self.worst_cost is None else self.worst_cost
        return Request(stage, {"text": text, "values": dict(values)}, material, pace="fake-model" if self.remote
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


@dataclass
class Completed:
    """What `run_cli` returns: like `subprocess.CompletedProcess`."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def environment(env: dict[str, str], cwd: Path) -> Iterator[None]:
    saved = dict(os.environ)
    here = Path.cwd()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        os.chdir(here)


def run_cli(main: Callable[[Sequence[str] | None], int], args: Sequence[str], *, env: dict[str, str],
            cwd: Path) -> Completed:
    """Run a CLI's `main` in this process with `env` as the whole environment, `cwd` as the folder, and
    stdout/stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with environment(env, cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
    return Completed(code, out.getvalue(), err.getvalue())


def run_process(args: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float = 90
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL)


# --- what every durability test checks -----------------------------------------------------------------


def rows_written(output: Path) -> int:
    """Data rows in the output so far (newlines minus the header); 0 before it exists."""
    return output.read_bytes().count(b"\n") - 1 if output.exists() and output.stat().st_size else 0


def read_rows(output: Path) -> tuple[list[str], list[list[str]]]:
    with open(output, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def assert_exactly_once(output: Path, expected: set[str], *, filled: str | None = None) -> None:
    """Whole rows only, no record twice, every expected record there (and `filled` non-empty in each)."""
    raw = output.read_bytes()
    assert raw.endswith(b"\n"), "torn last row left in the output"
    header, body = read_rows(output)
    assert all(len(r) == len(header) for r in body), "ragged row in the output"
    ids = [r[header.index("_record_id")] for r in body]
    assert len(ids) == len(set(ids)), "a record was written twice"
    assert set(ids) == expected, f"{len(expected - set(ids))} record(s) missing, {len(set(ids) - expected)} extra"
    if filled:
        assert all(r[header.index(filled)] for r in body), "a row was written before its stages finished"


# --- a job run in-process through the library, with fake providers ---------------------------------------


@dataclass
class LibraryRun:
    """A plan, job and pipeline built the way the CLI builds them, with `providers` in place of the real ones."""

    result: Any
    job: Any
    stop: Any


def run_library(input_path: Path, output: Path, stages_file: Path, providers: dict[str, Any], *,
                stop: Any = None, clock: Callable[[], float] | None = None,
                sleep: Callable[[float], object] | None = None,
                before_run: Callable[[Any], None] = lambda pipeline: None, **options: Any) -> LibraryRun:
    import time

    from enrichkit.job import Settings, open_job
    from enrichkit.pipeline import Pipeline
    from enrichkit.plan import RunOptions, plan_job
    from enrichkit.providers.function import FunctionProvider
    from enrichkit.stopping import StopSignal

    run_options = RunOptions(input=str(input_path), output=str(output), stages_file=str(stages_file), **options)
    plan = plan_job(run_options)
    if any(s.kind == "python" for s in plan.stages.stages) and "python" not in providers:
        providers = {**providers, "python": FunctionProvider(plan.functions)}
    stop = stop or StopSignal()
    job = open_job(plan, Settings(backoff_base=0.0), stop=stop, clock=clock or time.monotonic,
                   sleep=sleep or time.sleep, providers=providers)
    try:
        pipeline = Pipeline(plan, job.store, job.enricher, stop=stop, clock=clock or time.monotonic, pace=job.pace)
        before_run(pipeline)
        result = pipeline.run()
    finally:
        job.close()
    return LibraryRun(result, job, stop)
