"""Whole-file problems stop before any request: exit 2, one line, no traceback. Bad rows never crash a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Workspace, expected_ids, make_rows, read_csv, read_json, write_csv


@pytest.fixture
def ws(fws: Workspace) -> Workspace:
    """This file's runs answer from the fake provider on a fake clock (no stand-in; `sws` where the stand-in's
    own counts are the point)."""
    return fws


def _assert_one_line_exit_2(ws: Workspace, proc, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert ws.fake.stats()["generate"] == 0
    assert not ws.checkpoint.exists()


CASES = {
    "missing file": (lambda ws: ws.tmp / "nope.csv", ["no such file"]),
    "empty file": (lambda ws: _write(ws.tmp / "empty.csv", ""), ["empty"]),
    "blank lines only": (lambda ws: _write(ws.tmp / "blank.csv", "\n\n\n"), ["no header"]),
    "duplicate header names": (lambda ws: _write(ws.tmp / "dup.csv", "fund.title,fund.title\na,b\n"),
                               ["duplicate column names", "fund.title"]),
    "empty header name": (lambda ws: _write(ws.tmp / "gap.csv", "fund.title,,x\na,b,c\n"), ["empty column name"]),
    "unsupported type": (lambda ws: _write(ws.tmp / "data.txt", "a\n"), ["unsupported input type"]),
    "not an xlsx": (lambda ws: _write(ws.tmp / "fake.xlsx", "not a workbook"), ["fake.xlsx"]),
    "jsonl first line not an object": (lambda ws: _write(ws.tmp / "x.jsonl", "[1,2]\n"), ["x.jsonl"]),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_unreadable_input_file(ws: Workspace, case: str) -> None:
    make, needles = CASES[case]
    ws.input = make(ws)
    _assert_one_line_exit_2(ws, ws.run(), *needles)


def test_prompt_placeholder_the_header_lacks(ws: Workspace) -> None:
    ws.stages.write_text(ws.stages.read_text().replace("{fund.manager}", "{fund.managr}"), encoding="utf-8")
    _assert_one_line_exit_2(ws, ws.run(), "{fund.managr}", "poc")


def test_unknown_id_column(ws: Workspace) -> None:
    _assert_one_line_exit_2(ws, ws.run("--id-columns", "fund.title,nope"), "--id-columns", "'nope'")


@pytest.mark.parametrize("workers", ["0", "21", "-3"])
def test_max_workers_outside_1_to_20(ws: Workspace, workers: str) -> None:
    _assert_one_line_exit_2(ws, ws.run("--max-workers", workers), "--max-workers")


def test_unknown_stage_and_broken_stages_file(ws: Workspace) -> None:
    _assert_one_line_exit_2(ws, ws.run("--stages", "poc,nope"), "unknown stage", "nope")
    ws.stages.write_text("[[stages]\nname=", encoding="utf-8")
    _assert_one_line_exit_2(ws, ws.run(), "not valid TOML")
    _assert_one_line_exit_2(ws, ws.run("--stages-file", str(ws.tmp / "missing.toml")), "stages file not found")


def test_unknown_flag_and_missing_required_flag(ws: Workspace) -> None:
    _assert_one_line_exit_2(ws, ws.run("--frobnicate"), "unrecognized arguments")
    _assert_one_line_exit_2(ws, ws.run("--output", "x.csv", base=False), "--input")


def test_missing_api_key(sws: Workspace) -> None:
    env = {k: v for k, v in sws.env().items() if k != "GEMINI_API_KEY"}
    _assert_one_line_exit_2(sws, sws.run(env=env), "GEMINI_API_KEY")


def test_dead_api_key_stops_before_record_1_with_exit_2(sws: Workspace) -> None:
    sws.fake.configure(require_key="the-right-key-000")
    proc = sws.run()
    assert proc.returncode == 2, proc.stderr
    assert "GEMINI_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
    # The key is checked with an unbilled models.get before record 1: no record was tried, no file written.
    assert sws.fake.stats()["generate"] == 0 and not sws.checkpoint.exists()
    # With the key fixed the same command line (a cron line) does the job.
    ok = sws.run("--resume", env=sws.env(GEMINI_API_KEY="the-right-key-000"))
    assert ok.returncode == 0, ok.stderr


def test_header_only_file_is_nothing_to_do(ws: Workspace) -> None:
    write_csv(ws.input, [])
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    assert read_csv(ws.output) == []
    assert ws.fake.stats()["generate"] == 0


def test_bad_rows_are_logged_with_their_row_number_and_the_rest_is_enriched(ws: Workspace) -> None:
    good = make_rows(6)
    write_csv(ws.input, good)
    lines = ws.input.read_bytes().splitlines(keepends=True)
    lines.insert(3, b"only,three,fields\n")  # ragged: data row 3
    lines.insert(5, b"Bad \x00 nul,M,A,B,c@d.com\n")  # NUL: data row 5
    lines.insert(6, b"Bad \xff bytes,M,A,B,c@d.com\n")  # not UTF-8: data row 6
    ws.input.write_bytes(b"".join(lines))
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))
    assert len(ws.output_ids()) == 6
    errors = [__import__("json").loads(x) for x in ws.errors.read_text().splitlines()]
    assert [(e["row"], e["error_type"]) for e in errors] == [(3, "input_error"), (5, "input_error"),
                                                              (6, "input_error")]
    assert read_json(ws.report)["counts"]["input_errors"] == 3


def test_output_that_is_not_ours_is_refused(ws: Workspace) -> None:
    ws.output.parent.mkdir(parents=True)
    ws.output.write_text("name,age\nann,3\n", encoding="utf-8")
    proc = ws.run("--resume")
    _assert_one_line_exit_2(ws, proc, "not an enrichkit output")
    assert ws.output.read_text() == "name,age\nann,3\n"


def test_corrupt_checkpoint_is_one_line(ws: Workspace) -> None:
    ws.checkpoint.parent.mkdir(parents=True)
    ws.checkpoint.write_text("{not json", encoding="utf-8")
    proc = ws.run("--resume")
    assert proc.returncode == 2 and "corrupt checkpoint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("source", "needles"), [
    ("def f(record):\n    return {'x': 1\n", ["SyntaxError", "broken_stage.py", "line 2"]),
    ("import json\nraise RuntimeError('no config file')\ndef f(record):\n    return {}\n",
     ["RuntimeError: no config file", "broken_stage.py line 2"]),
])
def test_a_python_stage_module_that_fails_to_import_names_its_file_and_line(ws: Workspace, source: str,
                                                                             needles: list[str]) -> None:
    ws.stages.write_text('[[stages]]\nname = "p"\ntype = "python"\nfunction = "broken_stage:f"\n'
                         '[stages.fields]\nx = "string"\n', encoding="utf-8")
    (ws.tmp / "broken_stage.py").write_text(source, encoding="utf-8")
    _assert_one_line_exit_2(ws, ws.run(), "broken_stage", *needles)


@pytest.mark.parametrize(("flag", "value"), [
    ("--timeout", "nan"), ("--max-cost", "nan"), ("--delay", "nan"), ("--timeout", "inf"), ("--max-cost", "inf"),
    ("--delay", "inf"), ("--rpm", "nan"), ("--max-outage", "-inf"), ("--delay", "-1"), ("--max-cost", "0"),
])
def test_numbers_that_are_not_finite_are_usage_errors(ws: Workspace, flag: str, value: str) -> None:
    _assert_one_line_exit_2(ws, ws.run(flag, value), flag)


@pytest.mark.parametrize(("toml", "needles"), [
    ('[defaults]\nrpm = 0\n', ["rpm must be a number above 0"]),
    ('[defaults]\ntemperature = "hot"\n', ["temperature must be a number", "'hot'"]),
    ('[default]\nmodel = "gemini-2.5-flash"\n', ["unknown top-level key 'default'", "did you mean 'defaults'"]),
    ('[defaults]\nrpm = 10\n[[stages]]\nname = "s"\nprompt = "p {fund.title}"\nserach = true\n'
     '[stages.fields]\nx = "string"\n', ["unknown key for a llm stage 'serach'", "did you mean 'search'"]),
    ('[[stages]]\nname = "s"\nprompt = "p"\nmax_output_tokens = 0\n[stages.fields]\nx = "string"\n',
     ["max_output_tokens must be at least 1"]),
])
def test_stages_file_mistakes_name_the_file_the_key_and_the_nearest_valid_one(ws: Workspace, toml: str,
                                                                              needles: list[str]) -> None:
    if "[[stages]]" not in toml:
        toml += '[[stages]]\nname = "s"\nprompt = "p {fund.title}"\n[stages.fields]\nx = "string"\n'
    ws.stages.write_text(toml, encoding="utf-8")
    _assert_one_line_exit_2(ws, ws.run(), str(ws.stages), *needles)


def test_a_model_with_no_price_stops_at_start_unless_the_stages_file_prices_it(sws: Workspace) -> None:
    sws.fake.configure(extra_models=["gemini-9-ultra"])  # a model the API serves and pricing.toml does not know
    sws.stages.write_text(sws.stages.read_text().replace('model = "gemini-2.5-flash"', 'model = "gemini-9-ultra"'),
                         encoding="utf-8")
    _assert_one_line_exit_2(sws, sws.run(), "no price for model(s) gemini-9-ultra", '[prices."gemini-9-ultra"]')
    sws.stages.write_text(sws.stages.read_text() + '\n[prices."gemini-9-ultra"]\ninput = 1.0\noutput = 4.0\n',
                         encoding="utf-8")
    assert sws.run("--limit", "2").returncode == 1


def test_a_misspelt_model_is_told_so(sws: Workspace) -> None:
    proc = sws.run("--model", "gemini-2.5-flsh")
    assert proc.returncode == 2 and "gemini-2.5-flsh" in proc.stderr and "unknown or retired" in proc.stderr


def test_a_start_stopped_by_the_model_check_leaves_no_folder_or_lock_behind(sws: Workspace) -> None:
    proc = sws.run("--model", "gemini-2.5-flsh")
    assert proc.returncode == 2, proc.stderr
    assert not sws.output.parent.exists()  # out/ was made for this run: not even its lock file is left
    sws.output.parent.mkdir()
    assert sws.run("--model", "gemini-2.5-flsh").returncode == 2
    assert list(sws.output.parent.iterdir()) == []


def test_a_closed_stderr_and_stdout_change_neither_the_exit_code_nor_the_files(sws: Workspace) -> None:
    import subprocess

    proc = subprocess.Popen(sws.args(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=sws.env(), cwd=sws.tmp,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stderr.readline()  # like `2>&1 | head -1`: read one line, then hang up
    proc.stderr.close()
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert len(sws.output_ids()) == 40
    assert read_json(sws.checkpoint)["status"] == "completed"


@pytest.mark.e2e  # a real process: `| head` closes its stdout
def test_a_dry_run_read_by_head_still_exits_0(ws: Workspace) -> None:
    import subprocess

    proc = subprocess.Popen([*ws.args("--dry-run")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ws.env(),
                            cwd=ws.tmp, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0


def test_a_notify_url_that_is_no_url_is_a_usage_error_before_anything_is_paid(ws: Workspace) -> None:
    _assert_one_line_exit_2(ws, ws.run("--notify-url", "http://127.0.0.1:99999/hook"), "--notify-url")


def test_unreadable_rows_are_logged_once_even_when_the_first_run_stops_early(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(30))
    with open(ws.input, "ab") as f:
        f.write(b"only,three,fields\nBad \x00 nul,M,A,B,c@d.com\n")  # data rows 31 and 32, at the very end
    ws.stages.write_text(ws.stages.read_text().replace("[defaults]", "[defaults]\nmax_output_tokens = 400"),
                         encoding="utf-8")  # a call's worst case ~$0.0011: the budget covers two records
    first = ws.run("--max-cost", "0.0015", "--max-workers", "1")  # stops after two records: the walk stops early
    assert first.returncode == 4, first.stderr
    assert ws.run("--resume", "--max-cost", "100").returncode == 0  # the recorded budget, raised
    assert ws.run("--resume").returncode == 0
    errors = [__import__("json").loads(x) for x in ws.errors.read_text().splitlines()]
    assert sorted(e["row"] for e in errors if e["error_type"] == "input_error") == [31, 32]


def test_a_temp_file_left_by_a_kill_during_a_checkpoint_write_is_removed(ws: Workspace) -> None:
    ws.output.parent.mkdir(parents=True)
    stale = ws.output.with_name(".enriched.progress.json.999999.tmp")  # PID 999999: long gone
    stale.write_text("{half a checkpoint", encoding="utf-8")
    assert ws.run("--limit", "2").returncode == 1
    assert not stale.exists()


def _with_closed(fd: int, args: list[str]) -> list[str]:
    """`args` run by a shell with descriptor `fd` closed (`>&-`, `2>&-`, `<&-`), as a user's shell line does; fd 3:
    stderr closed and then taken by a file open for reading, as pyenv's `python` shim leaves it; "fd" 4: all three
    closed."""
    redirect = {0: "<&-", 1: ">&-", 2: "2>&-", 3: "2</dev/null", 4: ">&- 2>&- <&-"}[fd]
    return ["sh", "-c", f'exec "$@" {redirect}', "sh", *args]


def test_a_stream_closed_before_the_start_changes_neither_the_exit_code_nor_the_files(sws: Workspace) -> None:
    import sys

    import zygote  # forks as sh would run them (tests/zygote.py)
    from conftest import JOBS

    for fd, extra in ((1, ["--limit", "10"]), (2, ["--resume", "--limit", "10"]), (3, ["--resume", "--limit", "10"]),
                      (0, ["--resume"])):
        proc = zygote.run(_with_closed(fd, sws.args(*extra)), capture_output=True, text=True, env=sws.env(),
                          cwd=sws.tmp, timeout=90)
        assert proc.returncode == (1 if "--limit" in extra else 0), (fd, proc.stderr)  # records left: 1
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert sorted(sws.output_ids()) == sorted(expected_ids(sws))
    assert read_json(sws.checkpoint)["status"] == "completed"
    # The job tools, each with each stream closed (and all three).
    for command in (["status", str(sws.checkpoint)], ["validate", str(sws.checkpoint)], ["list", str(sws.tmp)],
                    ["missing", str(sws.checkpoint)]):
        for fd in (1, 2, 3, 0, 4):
            proc = zygote.run(_with_closed(fd, [sys.executable, str(JOBS), *command]), capture_output=True,
                              text=True, cwd=sws.tmp, timeout=60)
            assert proc.returncode == 0, (command, fd, proc.stderr)
            assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


@pytest.mark.parametrize("name", ["_cost_usd", "_record_id", "_job_id"])
def test_a_stage_field_named_like_a_column_enrichkit_adds_is_refused_at_start(ws: Workspace, name: str) -> None:
    """Else the output's header names it twice: the row's own `_record_id` and the model's answer share one name."""
    stages = ws.stages.read_text().replace('poc_name = "string"', f'poc_name = "string"\n{name} = "string"')
    ws.stages.write_text(stages, encoding="utf-8")
    for extra in (["--dry-run"], []):
        _assert_one_line_exit_2(ws, ws.run(*extra), name, "enrichkit adds")
