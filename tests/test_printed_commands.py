"""Every command enrichkit prints for the user to run next works where the user stands: run from a folder
outside the checkout, the commands printed by the run's summary (`continue with:`, `for Excel:`), by
`jobs.py status` and by the lock error are copied and run from yet another folder. Through the checkout's
scripts they name this Python and the scripts by absolute path; through the console scripts of `pip install .`
they name `enrichkit` / `enrichkit-jobs` (or their absolute path when PATH does not find them)."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest

from conftest import ROOT
from enrichkit.store.runlock import RunLock
from fake_gemini import FakeGemini
from installed import pip_install_once
from test_readme import fresh_shell_env

pytestmark = pytest.mark.e2e  # processes and servers: not in `make unit`

STAGES = """[[stages]]
name = "domain"
type = "python"
function = "enrichkit.builtin:email_domain"
[stages.fields]
email_domain = "string"
"""


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """The user's data folder (input and stages file, the job's output under out/) and another folder."""
    data, other = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir()
    other.mkdir()
    sample = (ROOT / "data" / "sample.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (data / "funds.csv").write_text("".join(sample[:9]), encoding="utf-8")  # 8 records
    (data / "stages.toml").write_text(STAGES, encoding="utf-8")
    return data, other


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)


def _printed(text: str, label: str) -> str:
    found = re.search(rf"^\s*{label}\s*(.+)$", text, flags=re.MULTILINE)
    assert found, (label, text)
    return found.group(1).strip()


def _rows(output: Path) -> list[dict[str, str]]:
    with output.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _first_job_then_every_printed_command(enrich: str, jobs: str, data: Path, other: Path, env: dict[str, str],
                                          expect: tuple[str, str]) -> None:
    """Start a job with --limit from the data folder; continue it, look at it and export it from `other` with
    exactly the commands printed, which start with `expect` (the enrich command, the jobs command)."""
    first = _run(f"{enrich} --input funds.csv --output out/funds.csv --stages-file stages.toml --limit 3", data, env)
    assert first.returncode == 1, first.stderr
    said = first.stdout + first.stderr
    resume = _printed(said, "continue with:")
    assert resume.startswith(expect[0] + " ") and resume.endswith(" --resume"), resume
    assert f"--input {data / 'funds.csv'} --output {data / 'out' / 'funds.csv'}" in resume
    assert len(_rows(data / "out" / "funds.csv")) == 3

    status = _run(f"{jobs} status out/funds.progress.json", data, env)
    assert status.returncode == 0, status.stderr
    assert _printed(status.stdout, "can_resume  yes:") == resume  # the same command, wherever it is shown

    again = _run(resume, other, env)  # copied to another folder
    assert again.returncode == 0, again.stderr
    assert len(_rows(data / "out" / "funds.csv")) == 8
    excel = _printed(again.stdout + again.stderr, "for Excel:")
    assert excel.startswith(expect[1] + " export ")
    exported = _run(excel, other, env)
    assert exported.returncode == 0, exported.stderr
    book = openpyxl.load_workbook(data / "out" / "funds.xlsx", read_only=True)
    assert len(list(book.active.iter_rows(values_only=True))) == 9  # type: ignore[union-attr]
    assert not list(other.iterdir()), "a command run from elsewhere wrote into that folder"


def test_the_checkout_scripts_print_commands_that_run_from_any_folder(folders: tuple[Path, Path]) -> None:
    data, other = folders
    env = fresh_shell_env()
    enrich, jobs = (shlex.join([sys.executable, str(ROOT / "scripts" / name)]) for name in ("enrich.py", "jobs.py"))
    _first_job_then_every_printed_command(enrich, jobs, data, other, env, (enrich, jobs))


def test_the_lock_error_names_a_cancel_command_that_runs_from_any_folder(folders: tuple[Path, Path]) -> None:
    data, other = folders
    env = fresh_shell_env()
    enrich = shlex.join([sys.executable, str(ROOT / "scripts" / "enrich.py")])
    made = _run(f"{enrich} --input funds.csv --output out/funds.csv --stages-file stages.toml --limit 3", data, env)
    assert made.returncode == 1, made.stderr
    lock = RunLock(data / "out" / "funds.lock", data / "out" / "funds.csv", data / "out" / "funds.progress.json")
    lock.acquire()  # as a live run would (this process: the printed cancel is not run, its `status` twin is)
    try:
        refused = _run(f"{enrich} --input funds.csv --output out/funds.csv --resume", data, env)
    finally:
        lock.release()
    assert refused.returncode == 3, refused.stderr
    cancel = _printed(refused.stderr, r".*stop it with:")
    jobs = shlex.join([sys.executable, str(ROOT / "scripts" / "jobs.py")])
    assert cancel == f"{jobs} cancel {data / 'out' / 'funds.progress.json'}"
    status = _run(cancel.replace(" cancel ", " status "), other, env)
    assert status.returncode == 0 and str(data / "out" / "funds.csv") in status.stdout, status.stderr


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pip_install_once(tmp_path_factory)


def test_the_console_scripts_of_pip_install_print_their_own_names(installed: Path, folders: tuple[Path, Path]
                                                                  ) -> None:
    data, other = folders
    env = fresh_shell_env()
    env["PATH"] = f"{installed}{os.pathsep}{env['PATH']}"  # as after `pip install .` in an activated venv, or pipx
    _first_job_then_every_printed_command("enrichkit", "enrichkit-jobs", data, other, env,
                                          ("enrichkit", "enrichkit-jobs"))


def test_a_console_script_run_by_its_path_prints_its_path(installed: Path, folders: tuple[Path, Path]) -> None:
    data, other = folders
    env = fresh_shell_env()  # not on PATH: `enrichkit` alone would not be found
    enrich, jobs = str(installed / "enrichkit"), str(installed / "enrichkit-jobs")
    _first_job_then_every_printed_command(enrich, jobs, data, other, env, (enrich, jobs))


def test_the_help_of_the_console_scripts_shows_their_own_names(installed: Path, tmp_path: Path) -> None:
    env = fresh_shell_env()
    env["PATH"] = f"{installed}{os.pathsep}{env['PATH']}"
    enrich = _run("enrichkit --help", tmp_path, env)
    assert enrich.returncode == 0 and enrich.stdout.startswith("usage: enrichkit ")
    assert "\n  enrichkit --input data/sample.csv" in enrich.stdout and "scripts/enrich.py" not in enrich.stdout
    assert "127.0.0.1:8765" not in enrich.stdout  # the dashboard's port is no stand-in
    jobs = _run("enrichkit-jobs export --help", tmp_path, env)
    assert jobs.returncode == 0 and "\n  enrichkit-jobs export out/" in jobs.stdout and "scripts/" not in jobs.stdout
    checkout = _run(shlex.join([sys.executable, str(ROOT / "scripts" / "jobs.py"), "--help"]), tmp_path, env)
    assert checkout.stdout.startswith("usage: jobs.py ") and "\n  python scripts/jobs.py status" in checkout.stdout


def test_the_crontab_line_of_the_installed_tool_runs_a_job_in_its_folder(installed: Path, tmp_path: Path,
                                                                         fake: FakeGemini) -> None:
    """docs/cron.md's line for the console script, as written but for its folder and the script's path, in cron's
    bare environment (no PATH to the script, the key in the job folder's .env)."""
    text = (ROOT / "docs" / "cron.md").read_text(encoding="utf-8")
    line = re.search(r"^\*/15 \* \* \* \* (cd /srv/jobs/funds && .*)$", text, flags=re.MULTILINE)
    assert line, "the installed tool's crontab line"
    folder = tmp_path / "funds"
    folder.mkdir()
    sample = (ROOT / "data" / "sample.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "funds.csv").write_text("".join(sample[:4]), encoding="utf-8")  # 3 records
    (folder / "stages.toml").write_text((ROOT / "data" / "stages.toml").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / ".env").write_text(f"GEMINI_API_KEY=cron-key-123456\nGEMINI_BASE_URL={fake.url}\n", encoding="utf-8")
    command = line.group(1).replace("/srv/jobs/funds", str(folder)).replace("/home/me/.local/bin", str(installed))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHELL": "/bin/sh"}  # what cron gives a job
    for _tick in range(2):  # the second tick finds the job complete
        proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=180)
        assert proc.returncode == 0, (folder / "out" / "enrich.log").read_text()
    assert len(_rows(folder / "out" / "funds.csv")) == 3
    assert "Done: all 3 records enriched" in (folder / "out" / "enrich.log").read_text()
