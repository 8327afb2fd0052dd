"""Many jobs: the checkpoints under a folder, a CHECKPOINT argument resolved to one, statuses newest first, and
the totals across jobs (`jobs.py list` and `stats`, the dashboard's listing)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from enrichkit.errors import ConfigError, UsageError
from enrichkit.jobs.state import JobStatus, load_status, parse_utc
from enrichkit.store.jobfiles import CHECKPOINT_SUFFIX

SKIP_DIRS = {"node_modules", "__pycache__", "site-packages"}


def find_checkpoints(root: Path) -> list[Path]:
    """Every `*.progress.json` under `root`, skipping hidden folders (.git, .venv) and package trees."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        found += [Path(folder) / name for name in sorted(files)
                  if name.endswith(CHECKPOINT_SUFFIX) and not name.startswith(".")]
    return found


def resolve_checkpoint(arg: str | None, cwd: Path | None = None) -> Path:
    """A CHECKPOINT argument: the progress file itself, a job's output CSV (its checkpoint beside it),
    or a folder holding exactly one job; none = the one job under the current folder."""
    if arg is None or Path(arg).is_dir():
        root = Path(arg) if arg is not None else (cwd or Path.cwd())
        found = find_checkpoints(root)
        if len(found) == 1:
            return found[0]
        if not found:
            raise UsageError(f"no job under {root} (no *{CHECKPOINT_SUFFIX} found); pass a CHECKPOINT")
        raise AmbiguousJob(root, found)
    path = Path(arg)
    if path.suffix.lower() == ".csv" and not path.name.endswith(CHECKPOINT_SUFFIX):
        path = Path(f"{path.with_suffix('')}{CHECKPOINT_SUFFIX}")
    if not path.exists():
        raise UsageError(f"{arg}: no such checkpoint (a job's *{CHECKPOINT_SUFFIX}, beside its output)")
    if not path.is_file():
        raise UsageError(f"{arg}: not a file")
    return path


class AmbiguousJob(UsageError):
    """Several jobs where one was expected; carries them so the CLI can list them."""

    def __init__(self, root: Path, found: list[Path]) -> None:
        super().__init__(f"{len(found)} jobs under {root}; pass one of them as CHECKPOINT")
        self.found = found


def load_all(checkpoints: Iterable[Path], **kwargs: Any) -> Iterator[JobStatus | tuple[Path, str]]:
    """Each job's status, or (path, reason) for a file that is not a readable checkpoint."""
    for path in checkpoints:
        try:
            yield load_status(path, **kwargs)
        except ConfigError as exc:
            yield path, str(exc)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:  # a hand-edited file
            yield path, f"{path}: corrupt checkpoint ({exc!r})"


def recency(job: JobStatus) -> tuple[float, str]:
    """Sort key: when the job last wrote its checkpoint."""
    return parse_utc(job.cp.last_updated) or 0.0, job.cp.started_at


def newest_first(jobs: list[JobStatus]) -> list[JobStatus]:
    return sorted(jobs, key=recency, reverse=True)


def load_sorted(paths: Iterable[Path], **kwargs: Any) -> tuple[list[JobStatus], list[tuple[Path, str]]]:
    """The readable jobs newest first, and the unreadable checkpoints with the reason."""
    loaded = list(load_all(paths, **kwargs))
    jobs = newest_first([j for j in loaded if isinstance(j, JobStatus)])
    return jobs, [j for j in loaded if not isinstance(j, JobStatus)]


def totals(jobs: list[JobStatus]) -> dict[str, Any]:
    """What `jobs.py stats` shows: sums across jobs, and the success rate of the records tried."""
    done = sum(j.done for j in jobs)
    failed = sum(j.failed for j in jobs)
    states: dict[str, int] = {}
    for j in jobs:
        states[j.state] = states.get(j.state, 0) + 1
    elapsed = sum(j.cp.elapsed_seconds for j in jobs)
    return {
        "jobs": len(jobs),
        "states": dict(sorted(states.items())),
        "records": sum(j.total for j in jobs),
        "done": done,
        "failed": failed,
        "pending": sum(j.pending for j in jobs),
        "success_rate": round(done / (done + failed), 4) if done + failed else None,
        "total_tokens": sum(j.cp.totals.total_tokens for j in jobs),
        "cost_usd": round(sum(j.cp.totals.cost_usd for j in jobs), 6),
        "token_cost_usd": round(sum(j.cp.totals.token_cost_usd for j in jobs), 6),
        "grounding_cost_usd": round(sum(j.cp.totals.grounding_cost_usd for j in jobs), 6),
        "requests": sum(j.cp.totals.requests for j in jobs),
        "rate_limited": sum(j.cp.totals.rate_limited for j in jobs),
        "elapsed_seconds": round(elapsed, 3),
        "records_per_min": round(done / elapsed * 60, 1) if elapsed > 0 and done else None,
    }
