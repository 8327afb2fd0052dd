"""Shared fixtures: the Gemini stand-in on 127.0.0.1, the CLI run in-process (or as a real process where only a
process can show it: kill -9, signals, locks across processes, cron), small input and stages files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fakes  # noqa: E402
import zygote  # noqa: E402
from fake_gemini import FakeConfig, FakeGemini  # noqa: E402
from fakes import Completed, FakeClock, FakeProvider, assert_exactly_once, run_cli, run_process  # noqa: E402
from zygote import ZygoteProcess  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # A bug in enrichkit re-raises under test instead of becoming "internal error" and exit 2 (as in simonw/llm).
    sys._called_from_test = True  # type: ignore[attr-defined]
    # The tests' folders (tmp_path) on a RAM disk where there is a roomy one: a run writes, fsyncs, renames and
    # unlinks some ten job files and opens a SQLite cache, which on a shared disk is half an in-process run's time.
    if "PYTEST_DEBUG_TEMPROOT" not in os.environ and not config.option.basetemp and _roomy_ram_disk(SHM):
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(SHM)


SHM = Path("/dev/shm")


def _roomy_ram_disk(path: Path) -> bool:
    """A writable tmpfs with programs allowed (pip-installed scripts run from tmp_path) and 1 GB free."""
    try:
        found = os.statvfs(path)
    except OSError:
        return False
    return (os.access(path, os.W_OK) and not found.f_flag & os.ST_NOEXEC and not found.f_flag & os.ST_RDONLY
            and found.f_bavail * found.f_frsize >= 1 << 30)


E2E_FILES = {"test_fake_gemini.py", "test_gemini_wire.py", "test_dashboard.py", "test_browser.py", "test_cron.py",
             "test_readme.py"}
E2E_FIXTURES = {"fake", "serve", "server", "receiver", "fake_run", "browser", "dashboard", "api_site"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the stand-in, a server or a process is end-to-end; `make unit` runs the others."""
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in E2E_FILES:
            item.add_marker(pytest.mark.e2e)

@pytest.fixture(scope="session", autouse=True)
def _zygote_closed_at_the_end() -> Iterator[None]:
    """The worker's zygote (tests/zygote.py, started by its first process) stops with the session."""
    yield
    zygote.close()


ENRICH = ROOT / "scripts" / "enrich.py"
JOBS = ROOT / "scripts" / "jobs.py"
API_KEY = "test-key-AbCdEf0123456789"

COLUMNS = ["fund.title", "fund.manager", "poc.first_name", "poc.last_name", "poc.email"]

# One LLM stage with structured output, then a python stage reading the LLM's answer.
STAGES = """
[defaults]
model = "gemini-2.5-flash"
temperature = 0.2

[[stages]]
name = "poc"
prompt = "Who is the point of contact of {fund.title} ({fund.manager})? We know {poc.first_name} {poc.last_name}."
[stages.fields]
poc_name = "string"
poc_email = "string"
confidence = "number"

[[stages]]
name = "domain"
type = "python"
function = "enrichkit.builtin:email_domain"
[stages.fields]
email_domain = "string"
"""


def make_rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"fund.title": f"Fund {i:05d}", "fund.manager": f"Manager {i % 37}", "poc.first_name": f"First{i}",
             "poc.last_name": f"Last{i}", "poc.email": f"p{i}@m{i % 37}.example.com"} for i in range(start, start + n)]


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    columns = columns or COLUMNS
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


class FakeProviderStats:
    """Where the stand-in stands for a workspace whose LLM stage answers from `FakeProvider`: what it was asked
    (`stats()["generate"]`, as the stand-in counts). Its address is one nobody answers at: nothing goes out."""

    url = "http://127.0.0.1:9"

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider

    def stats(self) -> dict[str, Any]:
        return {"generate": len(self.provider.calls)}


@dataclass
class Workspace:
    """A tmp directory with an input, a stages file and the stand-in's address; runs the real CLI.

    With `provider` (the `fws` fixture), `run()` runs the CLI in-process with its LLM stage answered by that
    `FakeProvider` on a `FakeClock` (the CLI's provider seam, `enrichkit.testing.use`): no stand-in, no HTTP,
    no real waits. `run_process` and `start` always run a real process (against the stand-in)."""

    tmp: Path
    fake: FakeGemini | FakeProviderStats
    provider: FakeProvider | None = None
    clock: FakeClock | None = None
    input: Path = field(init=False)
    stages: Path = field(init=False)
    output: Path = field(init=False)

    def __post_init__(self) -> None:
        self.input = write_csv(self.tmp / "input.csv", make_rows(40))
        self.stages = self.tmp / "stages.toml"
        self.stages.write_text(STAGES, encoding="utf-8")
        self.output = self.tmp / "out" / "enriched.csv"

    @property
    def checkpoint(self) -> Path:
        return self.output.with_name("enriched.progress.json")

    @property
    def report(self) -> Path:
        return self.output.with_name("enriched.report.json")

    @property
    def errors(self) -> Path:
        return self.output.with_name("enriched.errors.jsonl")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_"))}
        env.update({"GEMINI_API_KEY": API_KEY, "GEMINI_BASE_URL": self.fake.url, "PYTHONUNBUFFERED": "1"})
        env.update(extra)
        return env

    def args(self, *extra: str, base: bool = True) -> list[str]:
        if not base:
            return [sys.executable, str(ENRICH), *extra]
        return [sys.executable, str(ENRICH), "--input", str(self.input), "--output", str(self.output),
                "--stages-file", str(self.stages), "--max-retries", "2", *extra]

    def run(self, *extra: str, base: bool = True, timeout: float = 90, env: dict[str, str] | None = None
            ) -> Completed:
        """The CLI in this process (fast; the real SDK still talks to the stand-in over HTTP)."""
        from enrichkit.cli import main

        if self.provider is None:
            return run_cli(main, self.args(*extra, base=base)[2:], env=env or self.env(), cwd=self.tmp)
        from enrichkit.testing import use

        with use(providers={"llm": self.provider}, clock=self.clock):
            return run_cli(main, self.args(*extra, base=base)[2:], env=env or self.env(), cwd=self.tmp)

    def run_process(self, *extra: str, base: bool = True, timeout: float = 90, env: dict[str, str] | None = None
                    ) -> subprocess.CompletedProcess[str]:
        """The CLI as a real process, for what only a process shows."""
        return run_process(self.args(*extra, base=base), env=env or self.env(), cwd=self.tmp, timeout=timeout)

    def start(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str] | ZygoteProcess:
        """The CLI as a real process, left running (forked from the tests' zygote: see tests/zygote.py)."""
        return zygote.popen(self.args(*extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or self.env(), cwd=self.tmp, stdin=subprocess.DEVNULL)

    def output_ids(self) -> list[str]:
        return [row["_record_id"] for row in read_csv(self.output)]


@pytest.fixture(scope="session")
def api_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """enrichkit installed by pip into a folder of its own (once per session), from a copy of the checkout."""
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "lib", source / "lib", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", source)
    site = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
           "--target", str(site), str(source)]
    # Offline with the test environment's setuptools (requirements-dev.txt pins one that builds wheels itself);
    # failing that, as pip builds by default (its build backend from the configured index).
    built = subprocess.run([*pip, "--no-build-isolation", "--no-index"], capture_output=True, text=True, timeout=300)
    if built.returncode != 0:
        built = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"pip could not install enrichkit: {built.stderr[-2000:]}"
    return site


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    # The tests written against May 2026's catalogue pin it; those of today's routing and modelStatus ask for it.
    with FakeGemini(seed=1, catalogue="2026-05") as server:
        yield server


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeGemini]]:
    """Start a stand-in with the given config changes; every one started is stopped afterwards."""
    started: list[FakeGemini] = []

    def start(**config: Any) -> FakeGemini:
        server = FakeGemini(FakeConfig(**{"catalogue": "2026-05", **config}))
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def ws(tmp_path: Path, fake: FakeGemini) -> Workspace:
    return Workspace(tmp_path, fake)


@pytest.fixture
def sws(tmp_path: Path, fake: FakeGemini) -> Workspace:
    """The workspace on the stand-in, in a file whose `ws` is the fake provider's."""
    return Workspace(tmp_path, fake)


@pytest.fixture
def fws(tmp_path: Path) -> Workspace:
    """The workspace on the fake provider and a fake clock (in-process CLI runs only)."""
    provider = FakeProvider()
    return Workspace(tmp_path, FakeProviderStats(provider), provider, FakeClock())


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `predicate` (a state we cannot be told about from another process) with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def expected_ids(ws: Workspace) -> set[str]:
    from enrichkit.tables.records import InputTable, Record, make_record_id

    table = InputTable(ws.input)
    return {make_record_id(r.values, table.columns) for r in table.rows() if isinstance(r, Record)}


class ExThread(threading.Thread):
    """A thread that re-raises its exception in join (as in filelock's tests)."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(target=target, name=name)
        self.ex: tuple[type[BaseException], BaseException, TracebackType] | None = None

    def run(self) -> None:
        try:
            super().run()
        except Exception:
            self.ex = sys.exc_info()  # type: ignore[assignment]

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout=timeout)
        assert not self.is_alive()
        if self.ex is not None:
            raise RuntimeError(f"{self.name} failed") from self.ex[1]


def rows_written(ws: Workspace) -> int:
    """Data rows in the output so far (newlines minus the header); 0 before it exists."""
    return fakes.rows_written(ws.output)


def exactly_once(ws: Workspace, filled: str | None = "poc_name") -> None:
    assert_exactly_once(ws.output, expected_ids(ws), filled=filled)
