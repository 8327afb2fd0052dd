"""Run a script with the project's own virtualenv, and say how to get one when there is none.

`python scripts/enrich.py ...` typed in a fresh shell (no venv activated) then works as written: the
script re-executes itself with `.venv/bin/python`, which `make install` (and every make target) builds.
Without a .venv, the distributions requirements.txt names must be installed here; when one is
missing, one line says how to get them (nothing to keep in step: the list is requirements.txt).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
REQUIREMENTS = ROOT / "requirements.txt"


def use_project_python(script: str) -> None:
    """Make `lib/` importable; re-exec with .venv's Python unless this is it (or there is none)."""
    sys.path.insert(0, str(ROOT / "lib"))
    # Not the interpreter's `.resolve()`: the venv's python is a symlink to the very interpreter the user typed;
    # what makes it the venv's is being started through the link, which sets sys.prefix to the venv. The
    # variable stops a loop if the venv's python somehow is not the venv's (a venv moved or rebuilt elsewhere).
    if VENV_PYTHON.exists() and not _in_venv() and not os.environ.get("ENRICHKIT_VENV_TRIED"):
        os.environ["ENRICHKIT_VENV_TRIED"] = "1"
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), script, *sys.argv[1:]])
    if _in_venv() and _stamp_is_current():
        return  # `make install` put every requirement there (its stamp is written last): no 80 ms of metadata reads
    missing = [name for name in required() if not _installed(name)]
    if missing:
        sys.stderr.write(f"{Path(script).name}: error: this Python lacks {', '.join(missing)}; run `make install` "
                         "(it builds .venv, which the scripts then use by themselves) or "
                         "`pip install -r requirements.txt`\n")
        raise SystemExit(2)


def required() -> list[str]:
    """The distribution names requirements.txt lists (none when it cannot be read)."""
    try:
        lines = REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    names = (re.split(r"[\s=<>!~;\[@]", line.split("#", 1)[0].strip(), maxsplit=1)[0] for line in lines)
    return [name for name in names if name and not name.startswith("-")]


def _stamp_is_current() -> bool:
    """`make install`'s stamp is there and newer than requirements.txt (a pull that adds a requirement makes it
    stale until make runs again)."""
    try:
        return (VENV / ".installed").stat().st_mtime >= REQUIREMENTS.stat().st_mtime
    except OSError:
        return False


def _in_venv() -> bool:
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def _installed(name: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
