"""Executable docs: the commands of README.md and of every page under docs/ work as written, in a fresh shell
(no virtualenv activated: the scripts find `.venv` themselves), the README's first-job walk-through runs step by
step against the stand-in, and every flag the pages name exists."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest

from conftest import ROOT
from fake_gemini import FakeGemini
from installed import pip_install_once

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# The README's walk-through works on the user's own files; its commands run in their own test, in order.
WALKTHROUGH = "companies"


def _blocks(page: Path, language: str = "") -> list[str]:
    """The text of a page's code blocks in `language` ("": plain ```, shell sessions and commands)."""
    blocks: list[tuple[str, str]] = []
    fence: str | None = None
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
            if fence is not None:
                blocks.append((fence, ""))
        elif fence is not None:
            blocks[-1] = (fence, blocks[-1][1] + line + "\n")
    return [text for lang, text in blocks if lang == language]


def _commands(text: str, prefix: str) -> list[str]:
    """The commands in `text` starting with `prefix` (continuation lines joined; synopses with [...] left out)."""
    commands = [line.removeprefix("$ ").split(" #")[0].strip() for line in text.replace("\\\n", " ").splitlines()]
    return [c for c in commands if c.startswith(prefix) and "[" not in c and "…" not in c]


def _readme_lines(prefix: str) -> list[str]:
    """The commands starting with `prefix` in the README and every docs page, but for the walk-through's; each
    once (a command shown on several pages is the same command)."""
    text = "".join(block for page in PAGES for block in _blocks(page))
    return list(dict.fromkeys(c for c in _commands(text, prefix) if WALKTHROUGH not in c))


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


@pytest.mark.slow  # every command as written, each a fresh shell and process: `make slow`, CI
def test_every_readme_enrich_command_passes_a_dry_run_in_a_fresh_shell(checkout: Path) -> None:
    commands = _readme_lines("python scripts/enrich.py")
    assert len(commands) >= 4
    env = fresh_shell_env(GEMINI_API_KEY="readme-key-123456")
    # A command the pages show with --dry-run is the dry run of the one they show without it: run once.
    for command in dict.fromkeys(c if c.endswith(" --dry-run") else c + " --dry-run" for c in commands):
        proc = _shell(command, checkout, env)
        assert proc.returncode == 0, (command, proc.stderr)
        assert "nothing was called and nothing was written" in proc.stdout, command


@pytest.mark.slow  # every command as written, each a fresh shell and process: `make slow`, CI
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


# Pages that also name the flags of another command (jobs.py, the stand-in) or of a library.
NOT_ENRICH_FLAGS = {"jobs.md", "dashboard.md", "standin.md", "python-api.md", "development.md"}


def test_every_flag_in_the_readme_and_the_docs_exists() -> None:
    helptext = subprocess.run([sys.executable, str(ROOT / "scripts" / "enrich.py"), "--help"],
                              capture_output=True, text=True, check=True).stdout
    flags: dict[str, str] = {}
    for page in PAGES:
        if page.name not in NOT_ENRICH_FLAGS:
            flags.update((f, page.name) for f in re.findall(r"`(--[a-z][a-z-]+)", page.read_text(encoding="utf-8")))
    assert {"--resume", "--retry-failed", "--fresh", "--dry-run", "--encoding", "--delimiter"} <= set(flags)
    missing = sorted(f"{f} ({page})" for f, page in flags.items() if f not in helptext)
    assert not missing, missing


def test_the_readme_links_every_docs_page_and_stays_short() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    linked = set(re.findall(r"\]\(docs/([a-z-]+\.md)\)", text))
    assert {p.name for p in PAGES[1:]} <= linked, "a docs page the README's table of contents does not link"
    for page in PAGES:
        for target in re.findall(r"\]\(([a-z-/]+\.md)\)", page.read_text(encoding="utf-8")):
            if target != "docs/python-api.md":  # written by the Python API's own change
                assert (page.parent / target).exists(), (page.name, target)


def test_a_python_without_the_dependencies_is_told_how_to_get_them() -> None:
    # As with no .venv yet: one clear line and exit 2, not a ModuleNotFoundError traceback.
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or subprocess.run([python, "-c", "import filelock, dotenv, tqdm"],
                                        capture_output=True).returncode == 0:
        pytest.skip("no system python3 without enrichkit's dependencies here")
    proc = subprocess.run([python, str(ROOT / "scripts" / "enrich.py"), "--version"], capture_output=True, text=True,
                          env=fresh_shell_env(ENRICHKIT_VENV_TRIED="1"))  # as if .venv had been tried already
    assert proc.returncode == 2 and "make install" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # every command as written, each a fresh shell and process: `make slow`, CI
def test_the_readme_cron_and_retry_lines_run_a_job_to_the_end_in_a_fresh_shell(tmp_path: Path, fake: FakeGemini
                                                                              ) -> None:
    """The crontab lines (through make, and the python command beside it) and the make line that retries the
    failures, as written but for their `cd /srv/enrichkit`, on a fresh checkout with no out/ folder yet."""
    text = (ROOT / "docs" / "cron.md").read_text(encoding="utf-8")
    cron_make, cron_python, retry = (re.findall(r"cd /srv/enrichkit && (.*" + what + r".*)$", text, flags=re.M)[0]
                                     for what in (r"make enrich .*>>", r"\.venv/bin/python scripts/enrich\.py",
                                                  r"ARGS=--retry-failed"))
    for name in ("scripts", "lib", "Makefile", "requirements.txt", "requirements-dev.txt", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "data").mkdir()
    sample = (ROOT / "data" / "sample.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "data" / "funds.csv").write_text("".join(sample[:5]), encoding="utf-8")  # 4 records
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
    assert len(rows) == len({r["_record_id"] for r in rows}) == 4
    assert blocked_fund in {r["fund.title"] for r in rows}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pip_install_once(tmp_path_factory)


def test_the_readme_walk_through_runs_a_first_job_step_by_step_against_the_stand_in(installed: Path, tmp_path: Path
                                                                                   ) -> None:
    """The README's "your own file", in a folder of the user's outside the checkout, with the tool installed as the
    README says (`pip install .`: `enrichkit` and `enrichkit-jobs` on PATH): its input and stages file as shown,
    the stand-in started in the checkout and the environment exported as shown, then every command of the
    walk-through in order (dry run, --limit 20, the rows, status, --resume, the XLSX export)."""
    text = README.read_text(encoding="utf-8")
    assert "pip install ." in _blocks(README)[1]
    folder = tmp_path / "first-job"
    folder.mkdir()
    assert "`companies.csv`" in text and "`my-stages.toml`" in text
    (folder / "companies.csv").write_text(_blocks(README, "csv")[0], encoding="utf-8")
    (folder / "my-stages.toml").write_text(_blocks(README, "toml")[0], encoding="utf-8")
    plain = "".join(_blocks(README))
    standin = _commands(plain, "python scripts/fake_gemini.py")[0]
    export = next(line for line in plain.splitlines() if line.startswith("export GEMINI_BASE_URL="))
    readme_port = re.search(r"--port (\d+)", standin)
    assert readme_port and f"127.0.0.1:{readme_port.group(1)}" in export
    port = str(_free_port())  # the README's port may be taken on a shared test machine
    env = fresh_shell_env()
    env["PATH"] = f"{installed}{os.pathsep}{env['PATH']}"
    for assignment in export.removeprefix("export ").split():
        name, value = assignment.split("=", 1)
        env[name] = value.replace(readme_port.group(1), port)
    python = shutil.which("python3", path=env["PATH"]) or "python3"
    standin = re.sub(r"^python ", f"{python} ", standin.replace(readme_port.group(1), port))
    server = subprocess.Popen(["bash", "-c", "exec " + standin], cwd=ROOT, env=env,  # "in the checkout"
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("the stand-in command of the README did not start")
                time.sleep(0.05)
        steps = [c for c in plain.splitlines() if WALKTHROUGH in c]
        kinds = ["--dry-run", "--limit 20", "head -5", "enrichkit-jobs status", "--resume", "--output companies.xlsx"]
        assert [next((k for k in kinds if k in c), c) for c in steps] == kinds
        for command in steps:
            proc = _shell(command, folder, env)
            assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
            if "--limit 20" in command:
                rows = _csv_rows(folder / "out" / "companies.csv")
                assert all(r["summary"] and r["website"] for r in rows)
                assert sorted(r["company"] for r in rows) == ["Acme Corporation", "Globex", "Initech"]
            if "status" in command:
                assert "completed" in proc.stdout
    finally:
        server.terminate()
        server.wait(timeout=10)
    book = openpyxl.load_workbook(folder / "companies.xlsx", read_only=True)
    values = [list(row) for row in book.active.iter_rows(values_only=True)]  # type: ignore[union-attr]
    assert values[0][:4] == ["company", "city", "summary", "website"] and len(values) == 4


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
