"""The progress file (`*.progress.json`): its schema (`Checkpoint`: identity, status, ID lists and their digest,
per-stage totals, counts, the resume position), writing it atomically, reading it whole, and reading only its
summary without the ID lists (`read_summary`, for `jobs.py` and the dashboard).

It is bookkeeping, not the truth: on every start the output's `_record_id` column is merged in
(see `enrichkit.store.jobstore`), so the checkpoint interval decides only how much is redone. The only writer
is the job store (`store.jobstore`), which decides when; this module only knows the file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import secrets
import socket
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from enrichkit.errors import ConfigError
from enrichkit.run.counters import Counters, StageTable
from enrichkit.store.idset import IdSet
from enrichkit.store.jobfiles import atomic_write
from enrichkit.tables.scan import ScanCounts

VERSION = 1
KEEP_ERRORS = 50
_IDS_RE = re.compile(rb'"completed_ids"\s*:\s*\[([^\]]*)\]')
_ID_PUNCTUATION = b'", \t\r\n'  # what separates the IDs in the list
_IDS_MARK = b',\n "completed_ids": ['  # where the summary ends, as `render_checkpoint` writes it
_END = b"]\n}\n"  # how it ends: the failed_ids list, then the object
_HEAD_CHUNK = 64 * 1024


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_job_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
    return f"enrich_{stamp}_{secrets.token_hex(3)}"


@dataclass
class Checkpoint:
    """Everything `*.progress.json` holds. Counters are cumulative over every run of the job."""

    job_id: str
    output: str  # absolute path of the output this job writes
    input: dict[str, Any]  # {"path", "size", "mtime"} of the input when last seen
    stages: list[str]
    config_fingerprint: str
    id_columns: list[str] | None = None
    fields: list[str] = field(default_factory=list)  # the stages' output columns, in order
    stages_file: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # the run options a bare --resume continues with
    status: str = "running"
    started_at: str = field(default_factory=utc_now)
    last_updated: str = field(default_factory=utc_now)
    total_records: int = 0
    completed_ids: IdSet = field(default_factory=IdSet)
    failed_ids: set[str] = field(default_factory=set)
    totals: Counters = field(default_factory=Counters)
    # USD: the reservations of requests given up at their deadline, which Google may still have answered and billed
    # (not in `totals`: unknown); --max-cost counts them in every later run of the job, as in the run that had them.
    unsettled_usd: float = 0.0
    duplicates: int = 0
    input_errors: int = 0
    empty_rows: int = 0
    unreadable_logged: int = 0  # input rows up to this one had their unreadable rows written to the error log
    elapsed_seconds: float = 0.0  # running time summed over runs
    run_started_at: str = ""  # this (or the last) run: when it started, what it did and for how long,
    run_done: int = 0  # ... so `jobs.py status` shows the same rate and ETA as the run's own log lines
    run_seconds: float = 0.0
    output_bytes: int = 0  # the output's size when this checkpoint was written (after fsync) ...
    output_crc32: int | None = None  # ... and the CRC-32 of all its bytes up to there: any edit shows
    output_rows: int = 0  # rows in those bytes (= completed IDs then)
    ids_digest: str | None = None  # `ids_digest()` of the ID lists as last written: an edit of them shows
    resume_at: dict[str, int] | None = None  # {"offset", "row"}: every input row before it was done then
    counts_exact: bool = False  # total_records, duplicates, input_errors come from a whole pass
    config: dict[str, Any] = field(default_factory=dict)  # what config_fingerprint hashes, to name a change
    stop_reason: str = ""  # "limit": the last run stopped at its --limit (status interrupted; the job tools
    #                        show it as `limit_reached`)
    report_path: str = ""
    errors_path: str = ""
    runs: int = 0
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    filled: dict[str, int] = field(default_factory=dict)  # output field -> rows in the output where it is non-empty
    stage_totals: StageTable = field(default_factory=StageTable)  # stage -> successes, failures by type, cost
    pace: dict[str, Any] = field(default_factory=dict)  # model -> the limiter's figures at the last write
    models: dict[str, Any] = field(default_factory=dict)  # what the answers said of the models (lifecycle.ModelNotes)
    batch: dict[str, Any] | None = None  # --batch: the Google batch jobs (enrichkit.batch.ledger.Ledger.summary)
    errors: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP_ERRORS))

    @property
    def completed_count(self) -> int:
        return len(self.completed_ids)

    @property
    def failed_count(self) -> int:
        return len(self.failed_ids)

    @property
    def records_left(self) -> int:
        return max(0, self.total_records - self.completed_count - self.failed_count)

    def take_counts(self, counts: ScanCounts) -> None:
        """The input's counts from a whole walk: exact."""
        self.total_records, self.duplicates = counts.records, counts.duplicates
        self.input_errors, self.empty_rows = counts.unreadable, counts.empty
        self.counts_exact = True

    def mark_completed(self, record_id: str) -> None:
        self.completed_ids.add(record_id)
        self.failed_ids.discard(record_id)

    def mark_failed(self, record_id: str) -> None:
        if record_id not in self.completed_ids:
            self.failed_ids.add(record_id)

    def lists_digest(self) -> str:
        """A digest of `completed_ids` and `failed_ids` as they are now."""
        failed = ",".join(sorted(self.failed_ids)).encode("ascii", "replace")
        return f"{self.completed_ids.digest()}.{hashlib.blake2b(failed, digest_size=8).hexdigest()}"

    def lists_intact(self) -> bool:
        """Are the ID lists as this checkpoint's writer wrote them (no digit flipped, no ID swapped)?"""
        return self.ids_digest is not None and self.ids_digest == self.lists_digest()

    def summary(self) -> dict[str, Any]:
        """Every field but the ID lists, SPEC's keys first."""
        totals = self.totals.to_json()
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
            "total_records": self.total_records,
            "completed_count": self.completed_count,
            "failed_count": self.failed_count,
            **totals,
            "unsettled_usd": round(self.unsettled_usd, 9),
            "pid": self.pid,
            "host": self.host,
            "id_columns": self.id_columns,
            "fields": self.fields,
            "stages_file": self.stages_file,
            "options": self.options,
            "duplicates": self.duplicates,
            "input_errors": self.input_errors,
            "empty_rows": self.empty_rows,
            "unreadable_logged": self.unreadable_logged,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "run_started_at": self.run_started_at,
            "run_done": self.run_done,
            "run_seconds": round(self.run_seconds, 3),
            "runs": self.runs,
            "output_bytes": self.output_bytes,
            "output_crc32": self.output_crc32,
            "output_rows": self.output_rows,
            "ids_digest": self.ids_digest,
            "resume_at": self.resume_at,
            "counts_exact": self.counts_exact,
            "stop_reason": self.stop_reason,
            "config": self.config,
            "report_path": self.report_path,
            "errors_path": self.errors_path,
            "filled": self.filled,
            "stage_totals": self.stage_totals.to_json(),
            "pace": self.pace,
            "models": self.models,
            **({"batch": self.batch} if self.batch is not None else {}),
            "errors": list(self.errors),
        }


def render_checkpoint(cp: Checkpoint, f: IO[bytes]) -> None:
    """Write `cp` as JSON. The ID list is streamed in chunks so a million IDs never exist as a million
    str objects."""
    cp.ids_digest = cp.lists_digest()  # of what is written below: a resume trusts the lists only while it matches
    head = json.dumps(cp.summary(), indent=1, ensure_ascii=False)
    assert head.endswith("\n}")
    f.write(head[:-2].encode("utf-8"))
    f.write(b',\n "completed_ids": [')
    first = True
    for chunk in cp.completed_ids.hex_chunks():
        f.write((chunk if first else ", " + chunk).encode("ascii"))
        first = False
    f.write(b'],\n "failed_ids": ')
    f.write(json.dumps(sorted(cp.failed_ids)).encode("ascii"))
    f.write(b"\n}\n")


def write_checkpoint(path: str | Path, cp: Checkpoint) -> None:
    """Replace the checkpoint atomically (temp file, fsync, rename, fsync the folder)."""
    cp.last_updated = utc_now()
    atomic_write(path, lambda f: render_checkpoint(cp, f))


# The output is the record of what is done (see recovery): a job whose checkpoint is lost is rebuilt from it.
REBUILD = ("; move it aside and run again with --resume and the job's --stages-file: the job is rebuilt from the "
           "output's rows, none paid again")


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
            raise ConfigError(f"{path}: corrupt checkpoint: completed_ids holds something that is not an ID{REBUILD}") \
                from None
        del blob
        raw = raw[: match.start(1)] + raw[match.end(1):]
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a checkpoint (not UTF-8 text)") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: corrupt checkpoint (not valid JSON: {exc}){REBUILD}") from None
    _check(path, data)
    try:
        return _from_json(data, ids)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ConfigError(f"{path}: corrupt checkpoint ({exc!r}){REBUILD}") from None


@dataclass
class CheckpointSummary(Checkpoint):
    """A checkpoint read without its ID lists (`read_summary`), for looking at a job: the counts the file
    recorded stand in for them, and `completed_ids` and `failed_ids` are left empty."""

    recorded_completed: int = 0
    recorded_failed: int = 0

    @property
    def completed_count(self) -> int:
        return self.recorded_completed

    @property
    def failed_count(self) -> int:
        return self.recorded_failed


def read_summary(path: str | Path) -> Checkpoint:
    """Every field but the ID lists, reading only the file's head: the summary is written before them.

    What the job tools show needs only the counts, and a million IDs cost 20 MB to read and 0.1 s to
    parse, on every look at a running job. A file this cannot read that way (no recorded counts, keys
    out of the written order, not a checkpoint at all) gets the full `read_checkpoint`, its verdict
    included.
    """
    path = Path(path)
    head = _head(path)
    if head is None:
        return read_checkpoint(path)
    try:
        data = json.loads(head.decode("utf-8") + "}")
    except ValueError:  # UnicodeDecodeError included
        return read_checkpoint(path)
    if not isinstance(data, dict) or "job_id" not in data or data.get("version") != VERSION:
        return read_checkpoint(path)
    counts = data.get("completed_count"), data.get("failed_count")
    if not all(type(c) is int and c >= 0 for c in counts):
        return read_checkpoint(path)
    try:
        return _from_json(data, IdSet(), CheckpointSummary, recorded_completed=counts[0], recorded_failed=counts[1])
    except (TypeError, ValueError, KeyError, AttributeError):
        return read_checkpoint(path)


def _head(path: Path) -> bytes | None:
    """The file's bytes before `completed_ids`, or None unless it has the shape `render_checkpoint` writes
    (the mark, and the end of the failed_ids list last: a file cut short is read in full and refused)."""
    head = bytearray()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_HEAD_CHUNK):
                head += chunk
                at = head.find(_IDS_MARK, max(0, len(head) - len(chunk) - len(_IDS_MARK)))
                if at >= 0:
                    f.seek(-len(_END), os.SEEK_END)
                    return bytes(head[:at]) if f.read() == _END else None
    except OSError:
        return None
    return None


def _check(path: Path, data: Any) -> None:
    if not isinstance(data, dict) or "job_id" not in data:
        raise ConfigError(f"{path}: not an enrichkit checkpoint")
    if data.get("version") != VERSION:
        raise ConfigError(f"{path}: checkpoint version {data.get('version')!r} is not supported "
                          f"(expected {VERSION})")


def _usd(value: Any) -> float:
    """A recorded amount; 0 when absent, negative or not a number (a hand-edited NaN would stall the budget)."""
    amount = float(value or 0.0)
    return amount if math.isfinite(amount) and amount > 0 else 0.0


def _from_json(data: dict[str, Any], ids: IdSet, cls: type[Checkpoint] = Checkpoint, **extra: Any) -> Checkpoint:
    def text(key: str, default: str = "") -> str:
        value = data.get(key)
        return default if value is None else str(value)

    def number(key: str) -> int:
        return int(data.get(key) or 0)

    resume_at = data.get("resume_at")
    crc = data.get("output_crc32")
    return cls(
        job_id=str(data["job_id"]),
        output=text("output"),
        input=dict(data.get("input") or {}),
        stages=[str(s) for s in data.get("stages") or []],
        config_fingerprint=text("config_fingerprint"),
        id_columns=[str(c) for c in data["id_columns"]] if data.get("id_columns") else None,
        fields=[str(f) for f in data.get("fields") or []],
        stages_file=text("stages_file"),
        options=dict(data.get("options") or {}),
        status=text("status", "interrupted"),
        started_at=text("started_at"),
        last_updated=text("last_updated"),
        total_records=number("total_records"),
        completed_ids=ids,
        failed_ids={str(x) for x in data.get("failed_ids") or []},
        totals=Counters.from_json(data),
        unsettled_usd=_usd(data.get("unsettled_usd")),
        duplicates=number("duplicates"),
        input_errors=number("input_errors"),
        empty_rows=number("empty_rows"),
        unreadable_logged=number("unreadable_logged"),
        elapsed_seconds=float(data.get("elapsed_seconds") or 0.0),
        run_started_at=text("run_started_at"),
        run_done=number("run_done"),
        run_seconds=float(data.get("run_seconds") or 0.0),
        output_bytes=number("output_bytes"),
        output_crc32=int(crc) if crc is not None else None,
        output_rows=number("output_rows"),
        ids_digest=str(data["ids_digest"]) if data.get("ids_digest") else None,
        resume_at={"offset": int(resume_at["offset"]), "row": int(resume_at["row"])}
        if isinstance(resume_at, dict) else None,
        counts_exact=bool(data.get("counts_exact")),
        stop_reason=text("stop_reason"),
        config=dict(data.get("config") or {}),
        report_path=text("report_path"),
        errors_path=text("errors_path"),
        runs=number("runs"),
        pid=number("pid"),
        host=text("host"),
        filled={str(k): int(v) for k, v in (data.get("filled") or {}).items()},
        stage_totals=StageTable.from_json(data.get("stage_totals")),
        pace=dict(data.get("pace") or {}),
        models=dict(data.get("models") or {}),
        batch=dict(data["batch"]) if isinstance(data.get("batch"), dict) else None,
        errors=deque(data.get("errors") or [], maxlen=KEEP_ERRORS),
        **extra,
    )
