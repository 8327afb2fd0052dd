"""`pip install .` of this checkout into a virtualenv of its own, as a user installs the tool: its console scripts
`enrichkit` and `enrichkit-jobs`. The dependencies are this test run's (a .pth to its site-packages), so nothing
is downloaded but pip's build backend; the checkout is copied first, so no build/ lands in it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def pip_install(where: Path) -> Path:
    """The folder of the console scripts; skips the test when pip cannot build here (no index for setuptools)."""
    source, venv = where / "enrichkit", where / "venv"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copytree(ROOT / "lib", source / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "dependencies.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    built = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                            "--disable-pip-version-check", str(source)],
                           capture_output=True, text=True, timeout=300, cwd=where)
    if built.returncode != 0:
        pytest.skip(f"pip cannot build enrichkit here (no index for setuptools?): {built.stderr.strip()[-300:]}")
    return venv / "bin"
