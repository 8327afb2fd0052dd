"""What a job's page shows beyond its status: the last errors, the latest output rows, the fields, and
whether its output may be served at all (`output_problem`: only the job's own file, beside its
checkpoint inside the served folder, with enrichkit's lineage columns and the job's `_job_id`)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from enrichkit.jobs.catalog import Entry
from enrichkit.jobs.state import JobStatus
from enrichkit.store.jobfiles import distrust, held_regular
from enrichkit.store.output import RECORD_ID
from enrichkit.store.readback import scan_output

_TAIL_BYTES = 256 * 1024
_HEAD_BYTES = 1 << 20  # an output's header and first row are read from at most this much
LINEAGE = ("_cost_usd", "_record_id", "_job_id")


def output_problem(job: JobStatus, root: Path) -> str | None:
    """Why the job's output may not be served (downloads, sample rows), or None: it must be the job's
    own file — a regular file this user owns, beside its checkpoint inside the served folder, its header
    ending with enrichkit's lineage columns and its first row carrying the job's `_job_id`. A checkpoint
    may name any path as its output; nothing else the server can read is served through it."""
    output, checkpoint = job.paths.output, job.paths.checkpoint
    try:
        beside = output.parent.samefile(checkpoint.parent)
        inside = checkpoint.parent.resolve().is_relative_to(root.resolve())
    except OSError:
        return f"{output}: the job has written no output yet"
    if not (beside and inside):
        return f"{output} is not beside the job's checkpoint in the served folder; not served"
    why = _distrust_path(output)
    if why is not None:
        return f"{output} is {why}; not served"
    try:
        with held_regular(output) as (held, st):
            rows = scan_output(held, size=min(st.st_size, _HEAD_BYTES))
            header, first = next(rows, None), next(rows, None)
    except OSError as exc:
        return f"{output}: {exc.strerror or exc}"
    if header is None or not header.closed or tuple(header.fields or ())[-3:] != LINEAGE:
        return f"{output} is not an enrichkit output (its header does not end with {', '.join(LINEAGE)}); not served"
    if first is not None and first.closed and first.fields and first.fields[-1] != job.cp.job_id:
        return f"{output} holds the rows of another job ({first.fields[-1]!r}); not served"
    return None


def _distrust_path(path: Path) -> str | None:
    try:
        return distrust(os.lstat(path))
    except OSError as exc:
        return exc.strerror or str(exc)


def latest_rows(path: Path, job_id: str, count: int = 10) -> tuple[list[str], list[list[str]]]:
    """(header, the last `count` whole rows of the job's output, newest last), reading only its tail.
    `path` has passed `output_problem`; it is read again only as the regular file it is now."""
    try:
        with held_regular(path) as (held, st):
            size = st.st_size
            header_row = next(scan_output(held, size=min(size, _HEAD_BYTES)), None)
            if header_row is None or not header_row.closed or not header_row.fields:
                return [], []
            start = max(header_row.end, size - _TAIL_BYTES)
            with open(held, "rb") as f:
                f.seek(start)
                chunk = f.read(size - start)
    except OSError:
        return [], []
    header, width = header_row.fields, len(header_row.fields)
    chunk = chunk[: chunk.rfind(b"\n") + 1]  # a row still being written is not whole
    if start > header_row.end:
        chunk = chunk[chunk.find(b"\n") + 1:]  # the tail starts mid-row
    rows = [r for r in csv.reader(chunk.decode("utf-8", "replace").splitlines(keepends=True))
            if len(r) == width >= 3 and RECORD_ID.match(r[-2]) and r[-1] == job_id]
    return header, rows[-count:]


def job_detail(entry: Entry, root: Path, *, rows: int = 10, errors: int = 20) -> dict[str, Any]:
    """Everything the job page shows: the status figures, the last errors (newest first), the latest
    output rows (when the output may be served: `output_problem`), and the output's columns that the
    stages add."""
    assert entry.job is not None
    job = entry.job
    problem = output_problem(job, root)
    header, sample = ([], []) if problem else latest_rows(job.paths.output, job.cp.job_id, rows)
    return {
        **entry.to_json(),
        "fields": job.cp.fields,
        "errors": [e for e in reversed(list(job.cp.errors)[-errors:]) if isinstance(e, dict)],
        "sample": {"columns": header, "rows": list(reversed(sample))},
        "output_problem": problem,
        "errors_log": str(job.paths.errors),
        "report": str(job.paths.report),
    }
