"""The commands enrichkit prints for the user to run next (resume hints, `continue with:`, the lock error's
`cancel`, the export after a run), written so that they work from any folder: the console script's name when
that is what the user ran and it is the one on PATH, else absolute paths.

How the user ran enrichkit is read from `sys.argv[0]`:

- `enrichkit` / `enrichkit-jobs` (the console scripts of `pip install .` or `pipx install .`): the sibling
  script in the same folder, by name when PATH finds that very file, else by its absolute path;
- `scripts/enrich.py` / `scripts/jobs.py` (a checkout): this Python and the script's absolute path;
- anything else (`python -m enrichkit`, the dashboard, a test, the Python API): the checkout's script when
  the package sits in a checkout, else the console script on PATH, else `python -m enrichkit`.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from enrichkit.run.outcome import Verdict
    from enrichkit.store.jobfiles import JobPaths

ENRICH = "enrichkit"
JOBS = "enrichkit-jobs"
_SCRIPTS = {ENRICH: "enrich.py", JOBS: "jobs.py"}


def enrich_command() -> str:
    """How to start `enrichkit` (the `scripts/enrich.py` command) from any folder."""
    return _command(ENRICH)


def jobs_command() -> str:
    """How to start `enrichkit-jobs` (the `scripts/jobs.py` command) from any folder."""
    return _command(JOBS)


def _command(tool: str) -> str:
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name.removesuffix(".exe") in _SCRIPTS:
        return _console_script(tool, argv0.absolute().parent)
    if argv0 is not None and argv0.name in _SCRIPTS.values() and (argv0.parent / _SCRIPTS[tool]).is_file():
        return _checkout_script(argv0.absolute().parent / _SCRIPTS[tool])
    checkout = Path(__file__).resolve().parents[2] / "scripts" / _SCRIPTS[tool]
    if checkout.is_file():
        return _checkout_script(checkout)
    if shutil.which(tool):
        return tool
    return shlex.join([sys.executable, "-m", "enrichkit" if tool == ENRICH else "enrichkit.jobs"])


def _console_script(tool: str, folder: Path) -> str:
    script = folder / tool
    found = shutil.which(tool)
    if found is not None and _same(Path(found), script):
        return tool
    return shlex.quote(str(script)) if script.exists() else tool


def _checkout_script(script: Path) -> str:
    # This interpreter (absolute, not resolved: a virtualenv's python is a link that makes it the venv's); the
    # script would find .venv by itself from any python3, but this one is known to work.
    return shlex.join([sys.executable, str(script.absolute())])


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def cancel_command(checkpoint: str | Path) -> str:
    """The command that stops the live run of the job whose checkpoint this is (an absolute path)."""
    named = str(checkpoint) if str(checkpoint).startswith("<") else str(Path(checkpoint).absolute())
    return f"{jobs_command()} cancel {shlex.quote(named)}"


def export_command(checkpoint: str | Path, output: str | Path) -> str:
    """The command that writes a job's output so far as an XLSX workbook (`output` with .xlsx)."""
    return (f"{jobs_command()} export {shlex.quote(str(Path(checkpoint).absolute()))} --format xlsx "
            f"--output {shlex.quote(str(Path(output).absolute()))}")


def next_steps(paths: JobPaths, outcome: Verdict, report: Mapping[str, Any]) -> list[str]:
    """The lines under a run's summary: the command that continues the job (resume, or retry the failures), and
    once there are rows to look at and the run did not stop halfway, the export for Excel."""
    from enrichkit.jobs.continuing import next_command  # the job tools' one rule for "what continues a job"

    counts = report["counts"]
    steps = []
    command = next_command(paths, outcome.status, pending=counts["pending"], failed=counts["failed"])
    if command is not None:
        steps.append(f"continue with: {command}")
    if counts["completed"] and (not counts["pending"] or "--limit" in outcome.message):
        steps.append(f"for Excel: {export_command(paths.checkpoint, paths.output.with_suffix('.xlsx'))}")
    return steps


def shown_name(tool: str) -> str:
    """The command as `--help` examples and usage lines write it: the console script's name when that is what the
    user ran (`enrichkit`, `enrichkit-jobs`), else the checkout's form (`python scripts/enrich.py`)."""
    argv0 = Path(sys.argv[0]).name.removesuffix(".exe") if sys.argv and sys.argv[0] else ""
    return tool if argv0 in _SCRIPTS else f"python scripts/{_SCRIPTS[tool]}"


def with_shown_names(text: str) -> str:
    """`text` (help examples written for the checkout) with the commands as the user ran them."""
    return (text.replace("python scripts/enrich.py", shown_name(ENRICH))
            .replace("python scripts/jobs.py", shown_name(JOBS)))


def prog(tool: str) -> str:
    """argparse's `prog`: the console script's name, else the checkout script's file name."""
    shown = shown_name(tool)
    return shown if shown == tool else _SCRIPTS[tool]
