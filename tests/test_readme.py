"""Executable docs: every enrich command in the README is valid, and every flag it names exists."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```\n(.*?)```", text, flags=re.DOTALL)
    joined = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line.split("#")[0].strip() for line in joined if line.startswith("python scripts/enrich.py")]


def test_every_readme_enrich_command_passes_a_dry_run() -> None:
    commands = _readme_commands()
    assert len(commands) >= 4
    for command in commands:
        args = command.split()[2:]
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "enrich.py"), *args, "--dry-run"],
                              capture_output=True, text=True, cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, (command, proc.stderr)
        assert "nothing was called and nothing was written" in proc.stdout


def test_every_flag_in_the_readme_exists() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    helptext = subprocess.run([sys.executable, str(ROOT / "scripts" / "enrich.py"), "--help"],
                              capture_output=True, text=True, check=True).stdout
    enrich_part = re.split(r"^## (?:Job tools|Running from cron|Development)", text, flags=re.MULTILINE)[0]
    flags = set(re.findall(r"`(--[a-z][a-z-]+)", enrich_part))
    assert {"--resume", "--retry-failed", "--fresh", "--dry-run"} <= flags
    missing = sorted(f for f in flags if f not in helptext)
    assert not missing, missing
