"""What the dashboard reads: the jobs under its folder by key, a job's details (errors, the latest
output rows, fill rates), and the secrets nothing it serves may contain.

A job's key is its job ID; when two checkpoints under the folder carry the same ID (a copied job),
each gets the ID plus a short hash of its path. A key is only ever looked up among the checkpoints
found under the folder: nothing in a request is turned into a path.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from enrichkit.checkpoint import Checkpoint, read_summary
from enrichkit.errors import ConfigError
from enrichkit.jobs.state import JobStatus, find_checkpoints, load_status, recency
from enrichkit.output import RECORD_ID
from enrichkit.readback import scan_output
from enrichkit.redact import DEFAULT, Redactor

_SECRET_NAME = re.compile(r"^(GEMINI|GOOGLE)_\w*(KEY|TOKEN|SECRET)", re.IGNORECASE)
_TAIL_BYTES = 256 * 1024


class Secrets:
    """Where the dashboard finds the API key values it masks in everything it sends (any GEMINI_*/GOOGLE_*
    key, token or secret, from the environment and from the `.env` of the server's folder and of each
    job's folder); `redactor` masks them, and whatever this process registered itself."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.redactor = Redactor(also=DEFAULT)
        self._lock = threading.Lock()
        self._read: set[Path] = set()
        self.redactor.add_all(v for k, v in (os.environ if env is None else env).items() if _SECRET_NAME.match(k))

    def add_env_file(self, folder: Path) -> None:
        """Read `folder/.env` once (a job's key may live only there)."""
        with self._lock:
            if folder in self._read:
                return
            self._read.add(folder)
        path = folder / ".env"
        if path.is_file():
            try:
                found = dotenv_values(path)
            except (OSError, UnicodeDecodeError, ValueError):
                return
            self.redactor.add_all(v for k, v in found.items() if _SECRET_NAME.match(k))


@dataclass
class Entry:
    """A checkpoint found under the folder: its job, or why it cannot be read."""

    key: str
    checkpoint: Path
    job: JobStatus | None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.job is None:
            return {"key": self.key, "checkpoint": str(self.checkpoint), "state": "unreadable", "error": self.error}
        return {"key": self.key, **self.job.to_json()}


class Catalog:
    """The jobs under `root`; a checkpoint is parsed again only when its size or mtime changed, while
    each job's state (is its PID alive?) is decided afresh on every look. `find` looks a key up where
    the last `entries` found it, and walks the folder again only for a key it does not know."""

    def __init__(self, root: Path, secrets: Secrets) -> None:
        self.root = root.resolve()
        self.secrets = secrets
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int], Checkpoint | str]] = {}
        self._keys: dict[str, Path] = {}  # key -> checkpoint, as the last `entries` found them

    def entries(self) -> list[Entry]:
        """Every job, newest first, then the unreadable checkpoints."""
        paths = [p for p in find_checkpoints(self.root) if _inside(p, self.root)]
        loaded: list[tuple[Path, Checkpoint | str]] = [(p, self._read(p)) for p in paths]
        with self._lock:
            for gone in set(self._cache) - set(paths):
                del self._cache[gone]
        ids: dict[str, int] = {}
        for _, cp in loaded:
            if isinstance(cp, Checkpoint):
                ids[cp.job_id] = ids.get(cp.job_id, 0) + 1
        jobs: list[Entry] = []
        broken: list[Entry] = []
        for path, cp in loaded:
            if not isinstance(cp, Checkpoint):
                broken.append(self._entry(path, cp, "unreadable-" + self._hash(path)))
                continue
            key = cp.job_id if ids[cp.job_id] == 1 else f"{cp.job_id}-{self._hash(path)}"
            jobs.append(self._entry(path, cp, key))
        jobs.sort(key=lambda e: recency(e.job), reverse=True)  # type: ignore[arg-type]
        with self._lock:
            self._keys = {e.key: e.checkpoint for e in jobs + broken}
        return jobs + broken

    def find(self, key: str) -> Entry | None:
        with self._lock:
            path = self._keys.get(key)
        if path is not None:
            cp = self._read(path)
            # Still the job this key named (a key is its job ID, or with its path's hash for a copied job)?
            names = ({f"unreadable-{self._hash(path)}"} if isinstance(cp, str)
                     else {cp.job_id, f"{cp.job_id}-{self._hash(path)}"})
            if key in names:
                return self._entry(path, cp, key)
        return next((e for e in self.entries() if e.key == key), None)

    def _entry(self, path: Path, cp: Checkpoint | str, key: str) -> Entry:
        if isinstance(cp, str):
            return Entry(key, path, None, cp.removeprefix(f"{path}: "))
        job = load_status(path, cp=cp)
        for folder in {job.paths.checkpoint.parent, Path(str(cp.options.get("cwd") or "."))}:
            self.secrets.add_env_file(folder)
        return Entry(key, path, job)

    def _read(self, path: Path) -> Checkpoint | str:
        try:
            st = path.stat()
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            value: Checkpoint | str = read_summary(path)
        except ConfigError as exc:
            value = str(exc)
        with self._lock:
            self._cache[path] = (stamp, value)
        return value

    def _hash(self, path: Path) -> str:
        return hashlib.sha256(str(path.relative_to(self.root)).encode()).hexdigest()[:8]


def _inside(path: Path, root: Path) -> bool:
    """A checkpoint whose real file is under `root` (a link out of the folder is not one of its jobs)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        return False


# --- a job's details ------------------------------------------------------------------------------


def latest_rows(path: Path, count: int = 10) -> tuple[list[str], list[list[str]]]:
    """(header, the last `count` whole rows of the output, newest last), reading only its tail."""
    try:
        header_row = next(scan_output(path), None)
        size = path.stat().st_size
    except OSError:
        return [], []
    if header_row is None or not header_row.closed or not header_row.fields:
        return [], []
    header, width = header_row.fields, len(header_row.fields)
    start = max(header_row.end, size - _TAIL_BYTES)
    with open(path, "rb") as f:
        f.seek(start)
        chunk = f.read(size - start)
    chunk = chunk[: chunk.rfind(b"\n") + 1]  # a row still being written is not whole
    if start > header_row.end:
        chunk = chunk[chunk.find(b"\n") + 1:]  # the tail starts mid-row
    rows = [r for r in csv.reader(chunk.decode("utf-8", "replace").splitlines(keepends=True))
            if len(r) == width and RECORD_ID.match(r[-2]) and r[-1]]
    return header, rows[-count:]


def job_detail(entry: Entry, *, rows: int = 10, errors: int = 20) -> dict[str, Any]:
    """Everything the job page shows: the status figures, the last errors (newest first), the latest
    output rows, and the output's columns that the stages add."""
    assert entry.job is not None
    job = entry.job
    header, sample = latest_rows(job.paths.output, rows)
    return {
        **entry.to_json(),
        "fields": job.cp.fields,
        "errors": list(reversed(list(job.cp.errors)[-errors:])),
        "sample": {"columns": header, "rows": list(reversed(sample))},
        "errors_log": str(job.paths.errors),
        "report": str(job.paths.report),
    }
