"""Executable docs: the README's commands work as written, in a fresh shell (no virtualenv activated: the
scripts find `.venv` themselves), and every flag the README names exists."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT
from fake_gemini import FakeGemini


def _code_lines() -> list[str]:
    """The lines of the README's plain code blocks (``` with no language: shell sessions and commands)."""
    lines: list[str] = []
    fence: str | None = None
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
        elif fence == "":
            lines.append(line)
    return lines


def _readme_lines(prefix: str) -> list[str]:
    """The README's commands starting with `prefix` (continuation lines joined; synopses with [...] left out)."""
    text = "\n".join(_code_lines()).replace("\\\n", " ")
    commands = [line.removeprefix("$ ").split(" #")[0].strip() for line in text.splitlines()]
    return [c for c in commands if c.startswith(prefix) and "[" not in c and "…" not in c]


def fresh_shell_env(**extra: str) -> dict[str, str]:
    """The environment of a new login shell: the system PATH without this test run's virtualenv."""
    venv_bin = str(Path(sys.executable).parent)
    path = ":".join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(":") if p and p != venv_bin)
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")}
    return {**keep, "PATH": path, **extra}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder laid out as the repository (links to its scripts, lib, data, Makefile and .venv), where the
    README's relative paths (out/funds.csv, ...) can be written without touching the real checkout."""
    root = tmp_path_factory.mktemp("checkout")
    for name in ("scripts", "lib", "data", "Makefile", "requirements.txt", "requirements-dev.txt", ".venv"):
        (root / name).symlink_to(ROOT / name)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _shell(command: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    python = shutil.which("python3", path=env["PATH"]) or "python3"
    command = re.sub(r"^python3? ", f"{python} ", command)
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_every_readme_enrich_command_passes_a_dry_run_in_a_fresh_shell(checkout: Path) -> None:
    commands = _readme_lines("python scripts/enrich.py")
    assert len(commands) >= 4
    env = fresh_shell_env(GEMINI_API_KEY="readme-key-123456")
    for command in commands:
        proc = _shell(command + " --dry-run", checkout, env)
        assert proc.returncode == 0, (command, proc.stderr)
        assert "nothing was called and nothing was written" in proc.stdout, command


def test_every_readme_jobs_command_works_on_a_job_in_a_fresh_shell(checkout: Path) -> None:
    env = fresh_shell_env()
    # A job of the sample's 542 records through the python stage alone (no API needed to make one).
    made = _shell("python scripts/enrich.py --input data/sample.csv --output out/funds.csv --stages domain",
                  checkout, env)
    assert made.returncode == 0, made.stderr
    commands = [c for c in _readme_lines("python scripts/jobs.py") if " serve" not in c]
    assert len(commands) >= 8
    for command in commands:
        proc = _shell(command, checkout, env)
        # cancel on a stopped job says so and exits 1; validate and the rest exit 0 on this job
        allowed = (0, 1) if " cancel " in command else (0,)
        assert proc.returncode in allowed, (command, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
    status = _shell("make status OUTPUT=out/funds.csv", checkout, env)
    assert status.returncode == 0 and "completed" in status.stdout, status.stderr


def test_every_flag_in_the_readme_exists() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    helptext = subprocess.run([sys.executable, str(ROOT / "scripts" / "enrich.py"), "--help"],
                              capture_output=True, text=True, check=True).stdout
    enrich_part = re.split(r"^## (?:Job tools|Running from cron|Development)", text, flags=re.MULTILINE)[0]
    flags = set(re.findall(r"`(--[a-z][a-z-]+)", enrich_part))
    assert {"--resume", "--retry-failed", "--fresh", "--dry-run", "--encoding", "--delimiter"} <= flags
    missing = sorted(f for f in flags if f not in helptext)
    assert not missing, missing


def test_a_python_without_the_dependencies_is_told_how_to_get_them() -> None:
    # As with no .venv yet: one clear line and exit 2, not a ModuleNotFoundError traceback.
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or subprocess.run([python, "-c", "import filelock, dotenv, tqdm"],
                                        capture_output=True).returncode == 0:
        pytest.skip("no system python3 without enrichkit's dependencies here")
    proc = subprocess.run([python, str(ROOT / "scripts" / "enrich.py"), "--version"], capture_output=True, text=True,
                          env=fresh_shell_env(ENRICHKIT_VENV_TRIED="1"))  # as if .venv had been tried already
    assert proc.returncode == 2 and "make install" in proc.stderr and "Traceback" not in proc.stderr


def test_the_readme_cron_and_retry_lines_run_a_job_to_the_end_in_a_fresh_shell(tmp_path: Path, fake: FakeGemini
                                                                              ) -> None:
    """The crontab lines (through make, and the python command beside it) and the make line that retries the
    failures, as written but for their `cd /srv/enrichkit`, on a fresh checkout with no out/ folder yet."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    cron_make, cron_python, retry = (re.findall(r"cd /srv/enrichkit && (.*" + what + r".*)$", text, flags=re.M)[0]
                                     for what in (r"make enrich .*>>", r"\.venv/bin/python scripts/enrich\.py",
                                                  r"ARGS=--retry-failed"))
    for name in ("scripts", "lib", "Makefile", "requirements.txt", "requirements-dev.txt", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "data").mkdir()
    sample = (ROOT / "data" / "sample.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "data" / "funds.csv").write_text("".join(sample[:13]), encoding="utf-8")
    (tmp_path / "data" / "stages.toml").write_text((ROOT / "data" / "stages.toml").read_text(encoding="utf-8"),
                                                   encoding="utf-8")
    blocked_fund = sample[3].split(",")[0]
    fake.configure(fault_matching={"blocked": [blocked_fund]})  # one record's prompt is blocked: it fails
    env = fresh_shell_env(GEMINI_API_KEY="readme-key-123456", GEMINI_BASE_URL=fake.url)
    log = tmp_path / "out" / "enrich.log"
    checkpoint = tmp_path / "out" / "funds.progress.json"

    first = _shell(cron_make, tmp_path, env)
    assert first.returncode == 2, log.read_text()  # make's own status when enrichkit exits 1 (README, cron)
    make_says = re.search(r"make: \*\*\* \[(Makefile:\d+: enrich)\] Error \d", text)
    assert make_says and f"[{make_says.group(1)}] Error 1" in log.read_text()
    assert json.loads(checkpoint.read_text())["failed_count"] == 1
    requests = fake.stats()["generate"]
    again = _shell(cron_python, tmp_path, env)
    assert again.returncode == 1 and fake.stats()["generate"] == requests  # failures are not paid for again

    fake.configure(fault_matching={})
    retried = _shell(retry, tmp_path, env)
    assert retried.returncode == 0, (retried.stdout, retried.stderr)
    with (tmp_path / "out" / "funds.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len({r["_record_id"] for r in rows}) == 12
    assert blocked_fund in {r["fund.title"] for r in rows}
