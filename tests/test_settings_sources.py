"""Where a run's key and API address come from, and what it records: the .env files looked at (named in the
missing-key line), GEMINI_BASE_URL recorded with the job like --base-url (a bare --resume reaches the same API),
and a base URL where every model answers 404 said to be the likely cause."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import API_KEY, ROOT, Workspace, read_csv

# Without the base URL recorded, a resume would go to Google: a dead proxy keeps every such request on this machine.
NO_INTERNET = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def _checkout_env_has_a_key() -> bool:
    env = ROOT / ".env"
    return env.is_file() and bool(re.search(r"^(GEMINI|GOOGLE)_API_KEY=\S", env.read_text(), flags=re.M))


def _job_folder(ws: Workspace) -> Path:
    """The stages file in a folder of its own (the job's), the run started from ws.tmp."""
    folder = ws.tmp / "job"
    folder.mkdir()
    ws.stages = ws.stages.rename(folder / "stages.toml")
    return folder


def test_the_missing_key_line_names_every_env_file_looked_in(ws: Workspace) -> None:
    if _checkout_env_has_a_key():
        pytest.skip("this checkout's .env holds a key, which enrichkit reads")
    folder = _job_folder(ws)
    (ws.tmp / ".env").write_text("GEMINI_BASE_URL=" + ws.fake.url + "\n", encoding="utf-8")
    env = {k: v for k, v in ws.env().items() if k != "GEMINI_API_KEY"}
    proc = ws.run(env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "no API key" in line
    assert f"{ws.tmp / '.env'} (holds no GEMINI_API_KEY)" in line
    assert f"{folder / '.env'} (no such file)" in line
    assert f"{ROOT / '.env'} (" in line  # the checkout's, where `cp .env.example .env` puts it


def test_a_key_in_the_stages_files_folder_is_read_and_the_current_folders_comes_first(ws: Workspace) -> None:
    folder = _job_folder(ws)
    ws.fake.configure(require_key=API_KEY)
    env = {k: v for k, v in ws.env().items() if k != "GEMINI_API_KEY"}
    (folder / ".env").write_text(f"GEMINI_API_KEY={API_KEY}\n", encoding="utf-8")
    assert ws.run("--limit", "2", env=env).returncode == 1

    (ws.tmp / ".env").write_text("GEMINI_API_KEY=wrong-key-0000000000\n", encoding="utf-8")
    refused = ws.run("--resume", env=env)
    assert refused.returncode == 2, refused.stderr  # the current folder's (wrong) key was the one sent


def test_a_base_url_from_the_environment_is_recorded_and_a_bare_resume_uses_it(ws: Workspace) -> None:
    first = ws.run("--limit", "5", env=ws.env(**NO_INTERNET))
    assert first.returncode == 1, first.stderr
    assert json.loads(ws.checkpoint.read_text())["options"]["base_url"] == ws.fake.url
    before = ws.fake.stats()["generate"]
    env = {k: v for k, v in ws.env(**NO_INTERNET).items() if k != "GEMINI_BASE_URL"}  # a new shell, cron, the dashboard
    resumed = ws.run("--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert ws.fake.stats()["generate"] == before + 35
    assert len(ws.output_ids()) == 40


def test_a_base_url_in_a_env_file_is_recorded_too(ws: Workspace) -> None:
    (ws.tmp / ".env").write_text(f"GEMINI_BASE_URL={ws.fake.url}\n", encoding="utf-8")
    env = {k: v for k, v in ws.env(**NO_INTERNET).items() if k != "GEMINI_BASE_URL"}
    assert ws.run("--limit", "5", env=env).returncode == 1
    assert json.loads(ws.checkpoint.read_text())["options"]["base_url"] == ws.fake.url


class _NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"detail": "Not Found"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_gemini() -> Iterator[str]:
    """Another server on the port (the dashboard, a web app): 404 for every path."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_every_model_answering_404_says_to_check_the_base_url(ws: Workspace, not_gemini: str) -> None:
    proc = ws.run(env=ws.env(GEMINI_BASE_URL=not_gemini))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "unknown or retired" in line and f"every model answers 404 at {not_gemini}: check the base URL" in line


def test_env_example_points_at_the_stand_in_on_a_port_of_its_own() -> None:
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    url = re.search(r"GEMINI_BASE_URL=http://127\.0\.0\.1:(\d+)", example)
    assert url, example
    dashboard = re.search(r"--port \"\$\(or \$\(PORT\),(\d+)\)\"", (ROOT / "Makefile").read_text(encoding="utf-8"))
    assert dashboard and url.group(1) != dashboard.group(1)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"python scripts/fake_gemini.py --port {url.group(1)}" in readme


def test_the_cli_gives_a_python_stage_the_env_files_variables(fws: Workspace) -> None:
    """The library only reads the .env files; the CLI (the process edge) exports their variables into its process
    as it always has, so a python stage reading `os.environ` sees them."""
    (fws.tmp / ".env").write_text("STAGE_TOKEN=from-dotenv\n", encoding="utf-8")
    (fws.tmp / "dotenv_reader_stage.py").write_text(
        "import os\ndef f(record):\n    return {'token': os.environ.get('STAGE_TOKEN', 'unset')}\n", encoding="utf-8")
    fws.stages.write_text('[[stages]]\nname = "p"\ntype = "python"\nfunction = "dotenv_reader_stage:f"\n'
                          '[stages.fields]\ntoken = "string"\n', encoding="utf-8")
    proc = fws.run()
    assert proc.returncode == 0, proc.stderr
    assert {row["token"] for row in read_csv(fws.output)} == {"from-dotenv"}
