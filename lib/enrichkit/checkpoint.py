"""The progress file (`*.progress.json`): what a job has done, rewritten atomically.

It is bookkeeping, not the truth: on every start the output's `_record_id` column is merged in
(see `enrichkit.output`), so the checkpoint interval decides only how much is redone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import socket
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enrichkit.errors import ConfigError
from enrichkit.idset import IdSet

VERSION = 1
STATUSES = ("running", "interrupted", "completed", "completed_with_failures", "budget_exhausted", "failed")
KEEP_ERRORS = 50
_IDS_RE = re.compile(rb'"completed_ids"\s*:\s*\[([^\]]*)\]')
_ID_PUNCTUATION = b'", \t\r\n'  # what separates the IDs in the list


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_job_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
    return f"enrich_{stamp}_{secrets.token_hex(3)}"


@dataclass
class Checkpoint:
    """Everything `*.progress.json` holds. Counters are cumulative over every run of the job."""

    job_id: str
    output: str
    input: dict[str, Any]
    stages: list[str]
    config_fingerprint: str
    id_columns: list[str] | None = None
    fields: list[str] = field(default_factory=list)  # the stages' output columns, in order
    stages_file: str = ""
    status: str = "running"
    started_at: str = field(default_factory=utc_now)
    last_updated: str = field(default_factory=utc_now)
    total_records: int = 0
    completed_ids: IdSet = field(default_factory=IdSet)
    failed_ids: set[str] = field(default_factory=set)
    total_tokens: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    cache_hits: int = 0
    duplicates: int = 0
    input_errors: int = 0
    elapsed_seconds: float = 0.0  # running time summed over runs, for records/min and ETA
    output_bytes: int = 0  # the output's size when this checkpoint was written (after fsync) ...
    output_digest: str = ""  # ... and a digest of the bytes before it: a resume re-reads only what follows
    output_rows: int = 0  # rows in those bytes (= completed IDs then); an edited ID list shows as a mismatch
    resume_at: dict[str, int] | None = None  # {"offset", "row"}: every input row before it was done then
    counts_exact: bool = False  # total_records, duplicates, input_errors come from a whole pass (not an estimate)
    report_path: str = ""  # where this job's report and error log go (--report / --errors may move them)
    errors_path: str = ""
    runs: int = 0
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    errors: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP_ERRORS))

    @property
    def completed_count(self) -> int:
        return len(self.completed_ids)

    @property
    def failed_count(self) -> int:
        return len(self.failed_ids)

    def mark_completed(self, record_id: str) -> None:
        self.completed_ids.add(record_id)
        self.failed_ids.discard(record_id)

    def mark_failed(self, record_id: str) -> None:
        if record_id not in self.completed_ids:
            self.failed_ids.add(record_id)

    def summary(self) -> dict[str, Any]:
        """Every field but the ID lists, in the SPEC's order."""
        return {
            "version": VERSION,
            "job_id": self.job_id,
            "status": self.status,
            "started_at": self.started_at,
            "last_updated": self.last_updated,
            "input": self.input,
            "output": self.output,
            "stages": self.stages,
            "config_fingerprint": self.config_fingerprint,
            "id_columns": self.id_columns,
            "fields": self.fields,
            "stages_file": self.stages_file,
            "total_records": self.total_records,
            "completed_count": self.completed_count,
            "failed_count": self.failed_count,
            "total_tokens": self.total_tokens,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "requests": self.requests,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "cache_hits": self.cache_hits,
            "duplicates": self.duplicates,
            "input_errors": self.input_errors,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "runs": self.runs,
            "output_bytes": self.output_bytes,
            "output_digest": self.output_digest,
            "output_rows": self.output_rows,
            "resume_at": self.resume_at,
            "counts_exact": self.counts_exact,
            "report_path": self.report_path,
            "errors_path": self.errors_path,
            "pid": self.pid,
            "host": self.host,
            "errors": list(self.errors),
        }


def write_checkpoint(path: str | Path, cp: Checkpoint) -> None:
    """Write atomically: temp file beside it, fsync, rename, fsync the directory.

    The ID list is streamed in chunks so a million IDs never exist as a million str objects.
    """
    path = Path(path)
    cp.last_updated = utc_now()
    head = json.dumps(cp.summary(), indent=1, ensure_ascii=False)
    assert head.endswith("\n}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(head[:-2])
        f.write(',\n "completed_ids": [')
        first = True
        for chunk in cp.completed_ids.hex_chunks():
            f.write(chunk if first else ", " + chunk)
            first = False
        f.write('],\n "failed_ids": ')
        f.write(json.dumps(sorted(cp.failed_ids)))
        f.write("\n}\n")
        f.flush()
        os.fsync(f.fileno())  # the rename below must never expose a file whose bytes are not on disk
    tmp.replace(path)
    _fsync_dir(path.parent)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint; a file that is not one is a one-line `ConfigError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the checkpoint: {exc.strerror or exc}") from None
    ids = IdSet()
    # A million IDs as JSON strings would cost ~100 MB and a second; as bytes with the quotes and commas
    # deleted (C speed, one copy) they become 8 MB of integers.
    match = _IDS_RE.search(raw)
    if match:
        blob = raw[match.start(1):match.end(1)].translate(None, _ID_PUNCTUATION)
        try:
            if len(blob) % 16:
                raise ValueError
            ids = IdSet.from_hex_blob(blob)
        except ValueError:
            raise ConfigError(f"{path}: corrupt checkpoint: completed_ids holds something that is not an ID") \
                from None
        del blob
        raw = raw[: match.start(1)] + raw[match.end(1):]
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a checkpoint (not UTF-8 text)") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: corrupt checkpoint (not valid JSON: {exc})") from None
    if not isinstance(data, dict) or "job_id" not in data:
        raise ConfigError(f"{path}: not an enrichkit checkpoint")
    if data.get("version") != VERSION:
        raise ConfigError(f"{path}: checkpoint version {data.get('version')!r} is not supported "
                          f"(expected {VERSION})")
    try:
        cp = Checkpoint(
            job_id=str(data["job_id"]),
            output=str(data.get("output", "")),
            input=dict(data.get("input") or {}),
            stages=list(data.get("stages") or []),
            config_fingerprint=str(data.get("config_fingerprint", "")),
            id_columns=data.get("id_columns"),
            fields=list(data.get("fields") or []),
            stages_file=str(data.get("stages_file", "")),
            status=str(data.get("status", "interrupted")),
            started_at=str(data.get("started_at", "")),
            last_updated=str(data.get("last_updated", "")),
            total_records=int(data.get("total_records", 0)),
            completed_ids=ids,
            failed_ids={str(x) for x in data.get("failed_ids") or []},
            pid=int(data.get("pid") or 0),
            host=str(data.get("host", "")),
            errors=deque(data.get("errors") or [], maxlen=KEEP_ERRORS),
        )
        for name in ("total_tokens", "prompt_tokens", "output_tokens", "requests", "retries", "rate_limited",
                     "cache_hits", "duplicates", "input_errors", "runs", "output_bytes", "output_rows"):
            setattr(cp, name, int(data.get(name) or 0))
        cp.cost_usd = float(data.get("cost_usd") or 0.0)
        cp.elapsed_seconds = float(data.get("elapsed_seconds") or 0.0)
        cp.output_digest = str(data.get("output_digest") or "")
        cp.counts_exact = bool(data.get("counts_exact"))
        cp.report_path = str(data.get("report_path") or "")
        cp.errors_path = str(data.get("errors_path") or "")
        resume_at = data.get("resume_at")
        cp.resume_at = {"offset": int(resume_at["offset"]), "row": int(resume_at["row"])} \
            if isinstance(resume_at, dict) else None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: corrupt checkpoint ({exc})") from None
    return cp


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)
