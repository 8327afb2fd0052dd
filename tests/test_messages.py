"""Messages that must agree with what then happens: advice the next command can follow, `--fresh` without a
terminal, and a cache another process has locked (given up at once, with one warning)."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import pytest

from conftest import Workspace, exactly_once
from enrichkit.cli import main
from fakes import run_cli

DOMAIN = """
[[stages]]
name = "domain"
type = "python"
function = "enrichkit.builtin:email_domain"
[stages.fields]
email_domain = "string"
"""
UPPER = """
[[stages]]
name = "up"
type = "python"
function = "upper_fns:upper"
[stages.fields]
name_upper = "string"
"""


def _job(tmp_path: Path) -> tuple[Path, list[str]]:
    (tmp_path / "upper_fns.py").write_text("def upper(record):\n    return {'name_upper': record['name'].upper()}\n",
                                           encoding="utf-8")
    source = tmp_path / "in.csv"
    source.write_text("name,email\n" + "".join(f"n{i},p{i}@x{i}.com\n" for i in range(5)), encoding="utf-8")
    stages = tmp_path / "stages.toml"
    stages.write_text(DOMAIN, encoding="utf-8")
    return stages, ["--input", str(source), "--output", str(tmp_path / "out" / "o.csv"), "--stages-file", str(stages)]


def test_a_stage_added_to_a_job_is_not_advised_a_flag_that_then_refuses(tmp_path: Path) -> None:
    stages, args = _job(tmp_path)
    assert run_cli(main, args, env={}, cwd=tmp_path).returncode == 0
    stages.write_text(DOMAIN + UPPER, encoding="utf-8")
    first = run_cli(main, [*args, "--resume"], env={}, cwd=tmp_path)
    assert first.returncode == 2
    assert "--allow-config-change" not in first.stderr, first.stderr  # it could not help: the columns changed
    assert "name_upper" in first.stderr and "--output" in first.stderr
    forced = run_cli(main, [*args, "--resume", "--allow-config-change"], env={}, cwd=tmp_path)
    assert forced.returncode == 2 and "continuing" not in forced.stderr, forced.stderr
    assert forced.stderr.strip().splitlines()[-1] == first.stderr.strip().splitlines()[-1]


def test_a_prompt_change_is_advised_the_flag_that_then_continues(tmp_path: Path) -> None:
    stages, args = _job(tmp_path)
    assert run_cli(main, [*args, "--limit", "2"], env={}, cwd=tmp_path).returncode == 1
    stages.write_text(DOMAIN.replace('name = "domain"', 'name = "domain"\nskip_if_filled = ["email_domain"]'),
                      encoding="utf-8")
    first = run_cli(main, [*args, "--resume"], env={}, cwd=tmp_path)
    assert first.returncode == 2 and "--allow-config-change" in first.stderr
    forced = run_cli(main, [*args, "--resume", "--allow-config-change"], env={}, cwd=tmp_path)
    assert forced.returncode == 0 and "Done: all 5 records" in forced.stderr, forced.stderr


def test_fresh_with_stdin_closed_says_add_yes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stages, args = _job(tmp_path)
    assert run_cli(main, args, env={}, cwd=tmp_path).returncode == 0
    monkeypatch.setattr(sys, "stdin", None)  # `0<&-`: Python has no sys.stdin at all
    proc = run_cli(main, [*args, "--fresh"], env={}, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "--yes" in proc.stderr and "internal error" not in proc.stderr


def test_a_cache_locked_by_another_process_is_given_up_at_once(ws: Workspace) -> None:
    assert ws.run("--limit", "10").returncode == 1
    cache = next(ws.output.parent.glob("*.cache.sqlite"))
    holder = sqlite3.connect(cache, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process's transaction: every write must wait for it
    try:
        began = time.monotonic()
        proc = ws.run("--resume")
        took = time.monotonic() - began
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode == 0, proc.stderr
    assert took < 5, took  # SQLite's default wait is 5 s a call, one call after the other (52 s seen)
    assert proc.stderr.count("response cache") == 1, proc.stderr  # one warning, then no more
    exactly_once(ws)
