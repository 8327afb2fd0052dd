"""`make demo` (scripts/demo.py): it echoes the environment it sets and the command it runs, says that the
stand-in's answers are invented, and closes with a command to run the job yourself that has no --fresh --yes
(it continues, never deletes) and works from any folder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from demo import run
from fake_gemini import FakeGemini
from test_readme import fresh_shell_env

pytestmark = pytest.mark.e2e  # processes and servers: not in `make unit`


def test_the_demo_echoes_its_environment_and_closes_with_a_reusable_command(tmp_path: Path) -> None:
    sample = (ROOT / "data" / "sample.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "funds.csv").write_text("".join(sample[:3]), encoding="utf-8")  # 2 records
    output = tmp_path / "out" / "demo" / "enriched.csv"
    lines: list[str] = []
    assert run(tmp_path / "funds.csv", ROOT / "data" / "stages.toml", output, say=lines.append) == 0
    said = "\n".join(lines)
    url = re.search(r"Gemini stand-in on (http://127\.0\.0\.1:\d+)", said)
    assert url and f"$ export GEMINI_API_KEY=demo-key-not-secret GEMINI_BASE_URL={url.group(1)}" in said
    ran = next(line for line in lines if line.startswith("$ ") and "enrich.py" in line)
    assert "--fresh --yes" in ran  # the demo's own run starts over, and says so
    assert "answers are invented" in said and "not facts" in said

    yours = next(line for line in lines if line.strip().startswith("then: ")).strip().removeprefix("then: ")
    assert "--fresh" not in yours and "--yes" not in yours and yours.endswith(" --resume")
    assert "--port 8766" in said and "GEMINI_BASE_URL=http://127.0.0.1:8766" in said
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with FakeGemini(seed=2) as fake:  # "with a stand-in": this one, on a free port
        env = fresh_shell_env(GEMINI_API_KEY="anything", GEMINI_BASE_URL=fake.url)
        proc = subprocess.run(["bash", "-c", yours], capture_output=True, text=True, cwd=elsewhere, env=env,
                              timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "enriched.csv").is_file() and not list(elsewhere.iterdir())
