"""The pipeline as a library object, driven in-process with fake providers: stops, drains, batches, the
cache, the breaker. Nothing here starts a process or a server."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import COLUMNS, make_rows, write_csv
from enrichkit.errors import StageFailure
from enrichkit.providers.base import Request
from enrichkit.run.stopping import StopSignal
from fakes import FakeProvider, assert_exactly_once, rows_written, run_library

LLM = """
[[stages]]
name = "poc"
prompt = "Who runs {fund.title}?"
[stages.fields]
poc_name = "string"
"""

PYTHON = """
[[stages]]
name = "slow"
type = "python"
function = "slow_stage:slow"
[stages.fields]
done = "string"
"""


def _files(tmp_path: Path, rows: int, stages: str = LLM) -> tuple[Path, Path, Path]:
    input_path = write_csv(tmp_path / "in.csv", make_rows(rows))
    stages_file = tmp_path / "stages.toml"
    stages_file.write_text(stages, encoding="utf-8")
    return input_path, tmp_path / "out" / "out.csv", stages_file


def _ids(input_path: Path) -> set[str]:
    from enrichkit.tables.records import InputTable, Record, make_record_id

    table = InputTable(input_path)
    return {make_record_id(r.values, COLUMNS) for r in table.rows() if isinstance(r, Record)}


def test_a_run_writes_every_record_once(tmp_path: Path) -> None:
    input_path, output, stages = _files(tmp_path, 50)
    provider = FakeProvider()
    run = run_library(input_path, output, stages, {"llm": provider}, max_workers=4)
    assert run.result.verdict.exit_code == 0
    assert_exactly_once(output, _ids(input_path), filled="poc_name")
    assert len(provider.calls) == 50 and provider.closed


def test_a_stop_starts_no_record_that_was_not_started(tmp_path: Path) -> None:
    input_path, output, stages = _files(tmp_path, 200)
    stop = StopSignal(drain_seconds=30)
    started = threading.Event()

    def slow(request: Request) -> None:
        if len(provider.calls) == 8:
            stop.interrupt("SIGINT")  # Ctrl+C while 8 calls have started
            started.set()
        time.sleep(0.05)  # in flight when the stop comes

    provider = FakeProvider(on_call=slow)
    begun = time.monotonic()
    run = run_library(input_path, output, stages, {"llm": provider}, max_workers=4, stop=stop)
    assert run.result.verdict.exit_code == 130
    assert started.is_set()
    # Only the records in flight at the stop finished (at most one per worker beyond the 8th call).
    assert len(provider.calls) <= 8 + 4
    assert rows_written(output) == len(provider.calls)
    assert time.monotonic() - begun < 10  # no waiting for a drain that has nothing left to wait for


def test_finished_records_of_a_python_batch_are_kept_when_a_slow_one_outlasts_the_drain(tmp_path: Path) -> None:
    input_path, output, stages = _files(tmp_path, 64, PYTHON)
    (tmp_path / "slow_stage.py").write_text(
        "import time\n"
        "def slow(record):\n"
        "    if record['fund.title'] == 'Fund 00010':\n"
        "        time.sleep(3)\n"
        "    return {'done': 'yes'}\n", encoding="utf-8")
    stop = StopSignal(drain_seconds=0.5)

    def stop_soon(pipeline: object) -> None:
        threading.Timer(0.3, lambda: stop.interrupt("SIGINT")).start()

    run = run_library(input_path, output, stages, {}, max_workers=1, stop=stop, before_run=stop_soon)
    assert run.result.verdict.exit_code == 130
    # Records 0-9 of the first batch finished before the slow one: they are written, not thrown away.
    assert rows_written(output) >= 10


def test_a_cache_that_fails_costs_a_repeated_call_never_a_record(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from enrichkit.store.cache import ResponseCache

    def broken(self: ResponseCache, key: str, value: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ResponseCache, "put", broken)
    input_path, output, stages = _files(tmp_path, 20)
    run = run_library(input_path, output, stages, {"llm": FakeProvider()}, max_workers=4)
    assert run.result.verdict.exit_code == 0
    assert_exactly_once(output, _ids(input_path))


def test_a_corrupt_cache_is_replaced_with_its_journal_files(tmp_path: Path) -> None:
    input_path, output, stages = _files(tmp_path, 10)
    output.parent.mkdir()
    cache = output.with_name("out.cache.sqlite")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cache}{suffix}").write_bytes(b"this is not a database" * 100)
    run = run_library(input_path, output, stages, {"llm": FakeProvider()})
    assert run.result.verdict.exit_code == 0
    assert sqlite3.connect(cache).execute("SELECT count(*) FROM responses").fetchone()[0] == 10


def test_a_transient_failure_is_retried_and_a_permanent_one_fails_the_record(tmp_path: Path) -> None:
    input_path, output, stages = _files(tmp_path, 10)
    provider = FakeProvider(outcomes={"Fund 00002": [StageFailure("server_error", "503"), {"poc_name": "Ann"}],
                                      "Fund 00005": [StageFailure("client_error", "400 bad request")]})
    run = run_library(input_path, output, stages, {"llm": provider}, max_workers=2)
    assert run.result.verdict.exit_code == 1
    assert rows_written(output) == 9
    assert run.job.store.cp.failed_count == 1
    assert sum(1 for stage, text in provider.calls if "Fund 00002" in text) == 2


def test_skip_if_filled_runs_a_stage_only_for_the_gaps(tmp_path: Path) -> None:
    rows = make_rows(6)
    for row in rows[:4]:
        row["poc.email"] = ""
    input_path = write_csv(tmp_path / "in.csv", rows)
    stages = tmp_path / "stages.toml"
    stages.write_text('[[stages]]\nname = "find"\nprompt = "email of {fund.title}"\nskip_if_filled = ["poc.email"]\n'
                      '[stages.fields]\nfound_email = "string"\n', encoding="utf-8")
    provider = FakeProvider()
    run = run_library(input_path, tmp_path / "out.csv", stages, {"llm": provider})
    assert run.result.verdict.exit_code == 0
    assert len(provider.calls) == 4  # the two rows that had an e-mail cost nothing
    assert run.result.report["stages"]["find"]["skipped"] == 2


def test_a_second_signal_abandons_after_a_budget_or_fatal_stop() -> None:
    for first in ("budget", "fatal"):
        stop = StopSignal(drain_seconds=600)
        stop.request(first)
        assert not stop.leaving()
        stop.interrupt("SIGINT")
        assert stop.leaving() and stop.abandoning()


def test_a_run_is_never_abandoning_before_its_stopping_flag_is_set() -> None:
    """The retry reads the plain `stopping` flag before every attempt and wait and asks `abandoning()` only once it is
    set: every way of abandoning sets the flag first."""
    from enrichkit.testing import FakeClock

    clock = FakeClock()
    fresh = StopSignal(clock, drain_seconds=1)
    clock.advance(5)
    assert not fresh.stopping and not fresh.abandoning()
    ways = []
    drained = StopSignal(clock, drain_seconds=1)
    drained.request("signal")
    clock.advance(2)  # past the drain deadline
    ways.append(drained)
    abandoned = StopSignal(clock)
    abandoned.abandon()  # a fatal error
    ways.append(abandoned)
    twice = StopSignal(clock)
    twice.interrupt("SIGINT")
    twice.interrupt("SIGINT")
    ways.append(twice)
    assert all(stop.abandoning() and stop.stopping and stop() for stop in ways)


def test_a_signal_only_sets_flags_and_leaves_a_line_for_the_main_loop(capsys: pytest.CaptureFixture[str]) -> None:
    stop = StopSignal(drain_seconds=10)
    stop.interrupt("SIGTERM")
    assert capsys.readouterr().err == ""  # a handler never writes: the main thread may be mid-write
    assert "SIGTERM: finishing in-flight records" in (stop.take_announcement() or "")
    assert stop.take_announcement() is None


def test_an_output_replaced_under_the_run_is_not_called_done(tmp_path: Path) -> None:
    input_path, output, stages = _files(tmp_path, 60)
    swapped = threading.Event()

    def replace_output(request: Request) -> None:
        if len(provider.calls) == 20 and not swapped.is_set():
            swapped.set()
            copy = output.with_name("copy.csv")
            copy.write_bytes(output.read_bytes())  # an editor's save: a new file renamed over the old one
            copy.replace(output)

    provider = FakeProvider(on_call=replace_output)
    run = run_library(input_path, output, stages, {"llm": provider}, max_workers=2)
    assert swapped.is_set()
    assert run.result.verdict.exit_code == 1
    assert "was replaced or deleted by another program" in run.result.verdict.message
    again = run_library(input_path, output, stages, {"llm": FakeProvider()}, resume=True)
    assert again.result.verdict.exit_code == 0
    assert_exactly_once(output, _ids(input_path))


def test_an_input_rewritten_during_the_run_is_not_called_done(tmp_path: Path) -> None:
    input_path, output, stages = _files(tmp_path, 60)

    def rewrite_input(request: Request) -> None:
        if len(provider.calls) == 10:
            write_csv(input_path, make_rows(90))  # another program writes the file anew, longer

    provider = FakeProvider(on_call=rewrite_input)
    run = run_library(input_path, output, stages, {"llm": provider}, max_workers=1)
    assert run.result.verdict.exit_code == 1
    assert "The input changed during the run" in run.result.verdict.message
    again = run_library(input_path, output, stages, {"llm": FakeProvider()}, resume=True)
    assert again.result.verdict.exit_code == 0
    assert_exactly_once(output, _ids(input_path))  # all 90 of the file as it is now


def test_a_slow_python_stage_gets_every_worker(tmp_path: Path) -> None:
    input_path, output, stages = _files(tmp_path, 8, PYTHON)
    (tmp_path / "slow_stage.py").write_text("import time, threading\nseen = set()\n"
                                            "def slow(record):\n    seen.add(threading.get_ident())\n"
                                            "    time.sleep(0.2)\n    return {'done': 'yes'}\n", encoding="utf-8")
    sys.modules.pop("slow_stage", None)
    run = run_library(input_path, output, stages, {}, max_workers=8)
    assert run.result.verdict.exit_code == 0
    assert len(sys.modules["slow_stage"].seen) >= 4  # spread over the workers, not batched onto one
