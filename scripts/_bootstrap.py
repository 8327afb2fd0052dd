"""Run a script with the project's own virtualenv when the current Python lacks enrichkit's dependencies.

`python scripts/enrich.py ...` typed in a fresh shell (no venv activated) then works as written: the
script re-executes itself with `.venv/bin/python`, which `make install` (and every make target) builds.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
NEEDED = ("filelock", "dotenv", "tqdm", "tenacity", "requests", "openpyxl", "google.genai")


def use_project_python(script: str) -> None:
    """Make `lib/` importable; re-exec with .venv's Python when a dependency is missing here."""
    sys.path.insert(0, str(ROOT / "lib"))
    if all(_has(name) for name in NEEDED):
        return
    # Not `.resolve()`: the venv's python is a symlink to the very interpreter the user typed; what makes it the
    # venv's is being started through the link. The variable stops a loop if the venv itself lacks something.
    if VENV_PYTHON.exists() and not os.environ.get("ENRICHKIT_VENV_TRIED"):
        os.environ["ENRICHKIT_VENV_TRIED"] = "1"
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), script, *sys.argv[1:]])
    missing = [name for name in NEEDED if not _has(name)]
    sys.stderr.write(f"{Path(script).name}: error: this Python lacks {', '.join(missing)}; run `make install` "
                     "(it builds .venv, which the scripts then use by themselves) or "
                     "`pip install -r requirements.txt`\n")
    raise SystemExit(2)


def _has(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # `google.genai` when there is no `google` at all
        return False
