"""The commands that continue a job: its files as `enrich.py` arguments, and the one command (resume, else retry
the failures) that `jobs.py status`, its --json, the dashboard, a run's summary and its webhook all show."""

from __future__ import annotations

import shlex

from enrichkit.commands import enrich_command
from enrichkit.store.jobfiles import JobPaths, same_file


def continue_args(paths: JobPaths, flag: str = "--resume") -> list[str]:
    """The `enrich.py` arguments that continue a job: its files only, since the run takes every other
    option from the checkpoint, where it recorded them."""
    given = paths.input.absolute() if paths.input is not None else None
    args = ["--input", str(given), "--output", str(paths.output.absolute())]
    default = paths.default_checkpoint()
    if paths.checkpoint != default and not same_file(paths.checkpoint, default):
        args += ["--checkpoint", str(paths.checkpoint.absolute())]
    return [*args, flag]


def continue_command(paths: JobPaths, flag: str = "--resume", state: str = "") -> str:
    """The command line that continues a job in `state` (`flag`: --resume or --retry-failed). A job that
    spent its budget stops again at once without a higher one, which only its owner can choose:
    `--max-cost USD` stands for it."""
    command = enrich_command() + " " + shlex.join(continue_args(paths, flag))
    return command + " --max-cost USD" if state == "budget_exhausted" else command


def next_command(paths: JobPaths, state: str, *, pending: int, failed: int) -> str | None:
    """The one command that continues a stopped job: resume its pending records, else retry its failed
    ones; None when nothing is left. `jobs.py status`, its --json, the dashboard and the run's webhook
    all show this one."""
    if pending:
        return continue_command(paths, "--resume", state)
    if failed:
        return continue_command(paths, "--retry-failed", state)
    return None
