"""The API key never reaches a file enrichkit writes, nor its logs."""

from __future__ import annotations

import pytest

from conftest import API_KEY, Workspace


def test_api_key_is_in_no_file_and_no_log_line(ws: Workspace) -> None:
    # Errors on some records, a 400 carrying the key in its message, verbose logs: every place a key could leak.
    ws.fake.configure(fail_matching=["Fund 00001 "], error_rate=0.2, seed=9)
    proc = ws.run("-vv", "--max-retries", "1", env=ws.env(ENRICHKIT_BACKOFF_BASE="0.01"))
    assert proc.returncode in (0, 1), proc.stderr
    assert API_KEY not in proc.stderr and API_KEY not in proc.stdout
    written = [p for p in ws.tmp.rglob("*") if p.is_file() and p.name != "stages.toml"]
    assert any(p.suffix == ".jsonl" for p in written)
    for path in written:
        assert API_KEY.encode() not in path.read_bytes(), path


def test_key_from_dotenv_is_used_and_not_leaked(ws: Workspace) -> None:
    (ws.tmp / ".env").write_text(f"GEMINI_API_KEY={API_KEY}\n", encoding="utf-8")
    env = {k: v for k, v in ws.env().items() if k != "GEMINI_API_KEY"}
    ws.fake.configure(require_key=API_KEY)
    proc = ws.run(env=env)
    assert proc.returncode == 0, proc.stderr
    for path in ws.output.parent.iterdir():
        assert API_KEY.encode() not in path.read_bytes(), path


def test_a_401_that_quotes_the_key_back_reaches_no_line_and_no_file(ws: Workspace) -> None:
    ws.fake.configure(faults={"echo_key_401": 1.0})
    proc = ws.run("-v")
    assert proc.returncode == 2, proc.stderr
    assert "rejected the key" in proc.stderr
    assert API_KEY not in proc.stderr and "***" in proc.stderr  # the closing "Stopped:" line included
    for path in [p for p in ws.tmp.rglob("*") if p.is_file()]:
        assert API_KEY.encode() not in path.read_bytes(), path
    assert "***" in ws.report.read_text()


@pytest.mark.parametrize("key", ["“AIzaKeyPastedFromADocument0123”", "AIza key with spaces 0123456789",
                                 "AIzaKéyWithAccent0123456789"])
def test_a_key_pasted_with_quotes_spaces_or_accents_stops_at_start(ws: Workspace, key: str) -> None:
    proc = ws.run(env=ws.env(GEMINI_API_KEY=key))
    assert proc.returncode == 2, proc.stderr
    assert "GEMINI_API_KEY contains" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert key not in proc.stderr
    assert ws.fake.stats()["generate"] == 0 and not ws.checkpoint.exists()


def test_the_key_is_a_secret_even_in_a_job_without_an_llm_stage(ws: Workspace) -> None:
    ws.stages.write_text('[[stages]]\nname = "p"\ntype = "python"\nfunction = "leaky:f"\n'
                         '[stages.fields]\nx = "string"\n', encoding="utf-8")
    (ws.tmp / "leaky.py").write_text("import os\ndef f(record):\n"
                                     "    raise ValueError('boom ' + os.environ['GEMINI_API_KEY'])\n", encoding="utf-8")
    proc = ws.run()
    assert proc.returncode == 1, proc.stderr
    for path in [p for p in ws.tmp.rglob("*") if p.is_file() and p.suffix != ".py"]:
        assert API_KEY.encode() not in path.read_bytes(), path
    assert "boom ***" in ws.errors.read_text()
