"""`pip install .` of this checkout into a virtualenv of its own, as a user installs the tool: its console scripts
`enrichkit` and `enrichkit-jobs`. The dependencies are this test run's (a .pth to its site-packages), so nothing
is downloaded but pip's build backend; the checkout is copied first, so no build/ lands in it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT


def pip_install(where: Path) -> Path:
    """The folder of the console scripts. Where pip cannot build (no index for setuptools), the scripts are written
    as pip writes them, so what they print is still tested."""
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
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
           "--disable-pip-version-check", str(source)]
    # Offline with the test environment's setuptools (on the venv's path through the .pth; requirements-dev.txt
    # pins one that builds wheels itself); failing that, as pip builds by default (its backend from the index).
    built = subprocess.run([*pip, "--no-build-isolation", "--no-index"], capture_output=True, text=True, timeout=300,
                           cwd=where)
    if built.returncode != 0:
        built = subprocess.run(pip, capture_output=True, text=True, timeout=300, cwd=where)
    if built.returncode != 0:  # no index for setuptools here: the console scripts as pip writes them
        _console_scripts(python, source / "lib", venv / "bin")
    return venv / "bin"


_installed: list[Path] = []


def pip_install_once(factory: pytest.TempPathFactory) -> Path:
    """`pip_install` once per test session (per worker): every test of the console scripts shares it."""
    if not _installed:
        _installed.append(pip_install(factory.mktemp("installed")))
    return _installed[0]


def _console_scripts(python: Path, lib: Path, folder: Path) -> None:
    """The `enrichkit` and `enrichkit-jobs` scripts pip writes for [project.scripts], with `lib` on the path."""
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    for name, target in entry.items():
        module, function = target.split(":")
        script = folder / name
        script.write_text(f"#!{python}\nimport re, sys\nsys.path.insert(0, {str(lib)!r})\n"
                          f"from {module} import {function}\n"
                          "if __name__ == '__main__':\n"
                          "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                          f"    sys.exit({function}())\n", encoding="utf-8")
        script.chmod(0o755)
