"""The scripts' bootstrap (`scripts/_bootstrap.py`): in the project's venv it trusts `make install`'s stamp, but
only while the stamp is newer than requirements.txt (a `git pull` that adds a requirement is told, not a
traceback)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, stamp_age: float) -> ModuleType:
    """The bootstrap module as run from the project's venv at tmp_path/.venv, whose stamp is `stamp_age` seconds
    older than requirements.txt (negative: newer), which names a distribution nobody installed."""
    spec = importlib.util.spec_from_file_location("_bootstrap_under_test", ROOT / "scripts" / "_bootstrap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    venv = tmp_path / ".venv"
    venv.mkdir()
    stamp, requirements = venv / ".installed", tmp_path / "requirements.txt"
    stamp.touch()
    requirements.write_text("enrichkit-no-such-distribution==1.0\n", encoding="utf-8")
    now = requirements.stat().st_mtime
    os.utime(stamp, (now - stamp_age, now - stamp_age))
    monkeypatch.setattr(module, "VENV", venv)
    monkeypatch.setattr(module, "VENV_PYTHON", venv / "bin" / "python")
    monkeypatch.setattr(module, "REQUIREMENTS", requirements)
    monkeypatch.setattr(module, "_in_venv", lambda: True)
    monkeypatch.setattr(sys, "path", list(sys.path))  # use_project_python puts lib/ first
    return module


def test_a_requirement_added_after_make_install_is_named_not_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    module = _bootstrap(tmp_path, monkeypatch, stamp_age=60)
    with pytest.raises(SystemExit) as stopped:
        module.use_project_python("enrich.py")
    assert stopped.value.code == 2
    said = capsys.readouterr().err
    assert "lacks enrichkit-no-such-distribution" in said and "make install" in said


def test_a_stamp_newer_than_the_requirements_skips_reading_their_metadata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _bootstrap(tmp_path, monkeypatch, stamp_age=-60)

    def looked(name: str) -> bool:
        raise AssertionError(f"the metadata of {name} was read although make's stamp is newer")

    monkeypatch.setattr(module, "_installed", looked)
    module.use_project_python("enrich.py")
