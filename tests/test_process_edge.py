"""The process edge, as only a real process shows it: closed standard streams, SIGHUP, a python stage that leaves a
thread running. Each run ends with the exit code its work earned. (A SIGTERM during the start-up's model check is in
test_signals.py; the job tools with closed streams in test_bad_input.py.)"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENRICH, make_rows, wait_for, write_csv
from enrichkit.tables.records import InputTable, Record, make_record_id
from fakes import assert_exactly_once, read_rows, rows_written

pytestmark = pytest.mark.e2e  # every test here runs a real process

SLOW_MODULE = """
import threading, time

def slow(record):
    time.sleep(0.05)
    return {"email_domain": record["poc.email"].rpartition("@")[2]}

def leaves_a_thread(record):
    threading.Thread(target=time.sleep, args=(3600,), name="left-behind").start()  # not a daemon
    return {"email_domain": record["poc.email"].rpartition("@")[2]}
"""


def python_job(tmp_path: Path, n: int = 20, function: str = "enrichkit.builtin:email_domain") -> list[str]:
    """An input of `n` rows and a one-stage python stages file beside it; the CLI's arguments for them."""
    write_csv(tmp_path / "in.csv", make_rows(n))
    (tmp_path / "stage_funcs.py").write_text(SLOW_MODULE, encoding="utf-8")
    (tmp_path / "stages.toml").write_text(f"""
[[stages]]
name = "d"
type = "python"
function = "{function}"
[stages.fields]
email_domain = "string"
""", encoding="utf-8")
    return [sys.executable, str(ENRICH), "--input", "in.csv", "--output", "out/o.csv", "--stages-file", "stages.toml"]


def expected(tmp_path: Path) -> set[str]:
    table = InputTable(tmp_path / "in.csv")
    return {make_record_id(r.values, table.columns) for r in table.rows() if isinstance(r, Record)}


def shell(command: list[str], redirect: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`command` run by sh with `redirect` (`>&-` closes stdout, `2>&-` stderr, `<&-` stdin); by the zygote as sh
    would run it, when it is a CLI script (tests/zygote.py)."""
    import zygote

    return zygote.run(["sh", "-c", f'exec "$@" {redirect}', "sh", *command], capture_output=True, text=True,
                      cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("redirect", [">&-", "2>&-", "<&-", ">&- 2>&- <&-"])
def test_a_job_runs_the_same_with_standard_streams_closed(tmp_path: Path, redirect: str) -> None:
    args = python_job(tmp_path)
    done = shell(args, redirect, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    output = tmp_path / "out" / "o.csv"
    assert_exactly_once(output, expected(tmp_path), filled="email_domain")
    assert json.loads((tmp_path / "out" / "o.progress.json").read_text())["status"] == "completed"
    for path in (tmp_path / "out").iterdir():  # no line meant for a closed stream landed in a job file
        assert "new job" not in path.read_text(encoding="utf-8", errors="replace"), path
    again = shell([*args, "--resume"], redirect, tmp_path)
    assert again.returncode == 0, again.stderr  # the lock was released, the job is done


def test_sighup_drains_writes_the_report_and_exits_130(tmp_path: Path) -> None:
    """A closed terminal or SSH session (SIGHUP) is a stop like SIGTERM: in-flight records finish, the
    checkpoint says interrupted, the report is written, exit 130; a resume finishes exactly once."""
    args = python_job(tmp_path, n=100, function="stage_funcs:slow")  # 40 rows a second: the signal lands early
    proc = subprocess.Popen([*args, "--max-workers", "2"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    output = tmp_path / "out" / "o.csv"
    wait_for(lambda: rows_written(output) >= 4, what="a few rows")
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "SIGHUP: finishing in-flight records" in err and "Traceback" not in err
    assert json.loads((tmp_path / "out" / "o.progress.json").read_text())["status"] == "interrupted"
    assert (tmp_path / "out" / "o.report.json").exists()
    assert rows_written(output) < 100
    done = subprocess.run([*args, "--resume", "--max-workers", "20"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=90)
    assert done.returncode == 0, done.stderr
    assert_exactly_once(output, expected(tmp_path), filled="email_domain")


def test_a_thread_left_by_a_python_stage_does_not_hold_the_exit(tmp_path: Path) -> None:
    import zygote

    args = python_job(tmp_path, n=10, function="stage_funcs:leaves_a_thread")
    done = zygote.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "Done: all 10 records enriched." in done.stderr
    header, rows = read_rows(tmp_path / "out" / "o.csv")
    assert len(rows) == 10 and header[0] == "fund.title"


def test_the_console_scripts_run_the_same_with_standard_streams_closed(tmp_path: Path, api_site: Path) -> None:
    """`enrichkit` and `enrichkit-jobs` as pip installs them, and `python -m enrichkit`, with every standard
    stream closed: the job is done, exit 0."""
    args = python_job(tmp_path)[2:]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(api_site)}
    for name, command in (("console", [sys.executable, str(api_site / "bin" / "enrichkit")]),
                          ("module", [sys.executable, "-m", "enrichkit"])):
        folder = tmp_path / name
        folder.mkdir()
        for file in ("in.csv", "stages.toml"):
            shutil.copy(tmp_path / file, folder)
        done = subprocess.run(["sh", "-c", 'exec "$@" >&- 2>&- <&-', "sh", *command, *args], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, (name, done.stderr)
        assert_exactly_once(folder / "out" / "o.csv", expected(tmp_path), filled="email_domain")
        jobs = subprocess.run(["sh", "-c", 'exec "$@" >&- 2>&- <&-', "sh", sys.executable,
                               str(api_site / "bin" / "enrichkit-jobs"), "validate", "out/o.progress.json"],
                              cwd=folder, env=env, capture_output=True, text=True, timeout=90)
        assert jobs.returncode == 0, (name, jobs.stderr)
