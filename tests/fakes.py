"""Fakes shared by the tests: a clock, a provider (as simonw/llm's MockModel), the CLI run in-process,
and the exactly-once checks every durability test makes."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zygote
from enrichkit.testing import FakeClock, FakeProvider, Outcome

# The fake clock and provider are the library's own (`enrichkit.testing`), public for users' tests too.
__all__ = ["FakeClock", "FakeProvider", "Outcome"]


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
    """A real process (forked from the tests' zygote when it is one of the CLI scripts: see tests/zygote.py)."""
    return zygote.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
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

    from enrichkit.config.plan import RunOptions, plan_job
    from enrichkit.providers.function import FunctionProvider
    from enrichkit.run.job import Settings, open_job
    from enrichkit.run.pipeline import Pipeline
    from enrichkit.run.stopping import StopSignal

    run_options = RunOptions(input=str(input_path), output=str(output), stages_file=str(stages_file), **options)
    plan = plan_job(run_options)
    if any(s.kind == "python" for s in plan.stages.stages) and "python" not in providers:
        providers = {**providers, "python": FunctionProvider(plan.functions)}
    stop = stop or StopSignal()
    job = open_job(plan, Settings(backoff_base=0.0), stop=stop, clock=clock or time.monotonic,
                   sleep=sleep or time.sleep, providers=providers)
    try:
        pipeline = Pipeline(plan, job.store, job.enricher, stop=stop, inbox=job.inbox, clock=clock or time.monotonic,
                            pace=job.pace)
        before_run(pipeline)
        result = pipeline.run()
    finally:
        job.close()
    return LibraryRun(result, job, stop)
