"""A job's input and output read side by side: `validate` and `missing` of `jobs.py`, and the output's
whole rows that `export` and the dashboard read.

Everything here reads; nothing writes, truncates or locks. The output may be growing under a live
run, so it is read as a snapshot of its size at the start, and only whole rows are taken (a row
ends with `,<record id>,<job id>\\n`; `scan_output` tells a torn one). The input is walked by
`enrichkit.tables.scan.PendingScan`, the same walk a run makes, so a duplicate or an unreadable row means
the same thing here as there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enrichkit.errors import InputError, UsageError
from enrichkit.jobs.state import JobStatus
from enrichkit.store.idset import IdSet
from enrichkit.store.jobfiles import CHECKPOINT_SUFFIX, STOPPED, JobPaths, same_file
from enrichkit.store.output import output_columns
from enrichkit.store.readback import scan_output
from enrichkit.tables.records import InputTable, Record, Table, make_record_id
from enrichkit.tables.scan import PendingScan

SHOW = 20  # defects of one kind listed one by one; the rest are counted


@dataclass
class WholeRows:
    """The output's whole rows as of now; `skipped` counts malformed rows met in the middle and
    `torn` is True when the last row was still being written (or cut by a crash)."""

    path: Path
    header: list[str] = field(default_factory=list)
    skipped: int = 0
    torn: bool = False

    def rows(self) -> Iterator[list[str]]:
        for _start, fields in self.rows_at():
            yield fields

    def rows_at(self) -> Iterator[tuple[int, list[str]]]:
        """(byte offset where the row starts, its fields) for each whole row."""
        if not self.path.exists():
            return
        scan = scan_output(self.path)
        first = next(scan, None)
        if first is None or not first.closed or not first.fields:
            return  # no header yet: nothing written
        self.header = first.fields
        width = len(self.header)
        start = first.end
        for row in scan:
            if not row.closed:
                self.torn = True
            elif row.is_record(width):
                yield start, row.fields  # type: ignore[misc]
            else:
                self.skipped += 1
            start = row.end


def output_ids(path: Path) -> IdSet:
    """Record IDs of the output's whole rows (what is done for sure)."""
    ids = IdSet()
    for fields in WholeRows(path).rows():
        ids.add(fields[-2])
    return ids


def open_input(job: JobStatus) -> Table:
    path = job.paths.input
    if path is None or not str(path) or str(path) == ".":
        raise InputError(f"{job.paths.checkpoint}: the checkpoint does not name its input")
    options = job.cp.options  # read the input as the run was told to (--encoding, --delimiter), else sniffed
    return InputTable(path, encoding=options.get("encoding") or None, delimiter=options.get("delimiter") or None)


def id_columns(job: JobStatus, table: Table) -> list[str]:
    columns = job.cp.id_columns or list(table.columns)
    table.require_columns(columns, "the job's --id-columns")
    return columns


def input_scan(job: JobStatus, table: Table, *, done: IdSet | None = None) -> PendingScan:
    """The job's input walked as a run walks it: each record once, in file order; with `done`, only
    the records not in it."""
    return PendingScan(table, id_columns(job, table), done=None if done is None else done.__contains__)


def checked_target(target: str, job: JobPaths) -> Path:
    """An --output path, refused when it is one of the job's own files or a folder."""
    path = Path(target)
    own = [p for p in (*job.written().values(), job.input) if p is not None]
    if any(same_file(path, p) for p in own):
        raise UsageError(f"{target}: that is one of the job's own files; choose another --output")
    if path.is_dir():
        raise UsageError(f"{target}: is a folder; give a file name")
    return path


# --- missing --------------------------------------------------------------------------------------


@dataclass
class MissingCount:
    pending: int = 0
    failed: int = 0
    unreadable: int = 0  # input rows that are no record at all (see the error log)


def missing_records(job: JobStatus, table: Table, *, include_failed: bool = True,
                    count: MissingCount | None = None) -> Iterator[tuple[Record, str, str]]:
    """(record, record ID, "pending" | "failed") for each input record whose row is not in the output,
    in input order, each ID once (a duplicate row is the same record)."""
    count = count if count is not None else MissingCount()
    scan = input_scan(job, table, done=output_ids(job.paths.output))
    failed_ids = job.with_ids().failed_ids
    for pending in scan:
        if pending.record_id in failed_ids:
            count.failed += 1
            if include_failed:
                yield pending.record, pending.record_id, "failed"
        else:
            count.pending += 1
            yield pending.record, pending.record_id, "pending"
    count.unreadable = scan.counts.unreadable


# --- validate -------------------------------------------------------------------------------------


@dataclass
class Defect:
    kind: str  # header | torn | ragged | duplicate | mismatch | lost | not_done
    message: str
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "count": self.count}


@dataclass
class Validation:
    job_id: str
    defects: list[Defect] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    input_records: int = 0
    output_rows: int = 0
    failed: int = 0

    @property
    def ok(self) -> bool:
        return not self.defects

    def add(self, kind: str, items: list[str], total: int, summary: str) -> None:
        """One defect per item for the first SHOW, then one that counts the rest."""
        for message in items[:SHOW]:
            self.defects.append(Defect(kind, message))
        if total > SHOW:
            self.defects.append(Defect(kind, f"... and {total - SHOW} more: {summary}", total - SHOW))

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "ok": self.ok, "defect_count": sum(d.count for d in self.defects),
                "defects": [d.to_json() for d in self.defects], "notes": self.notes,
                "input_records": self.input_records, "output_rows": self.output_rows, "failed": self.failed}


def validate_job(job: JobStatus) -> Validation:
    """Prove the job's integrity from its files: the output's header is the one the job writes; no torn,
    ragged or duplicated row; each row's `_record_id` matches its values; every input record is in the
    output exactly once or in `failed_ids`."""
    cp = job.with_ids()
    table = open_input(job)
    result = Validation(cp.job_id)
    if job.state not in STOPPED:
        result.notes.append(f"the job is {job.state}: records not yet done and a torn last row may be "
                            "transient; validate a stopped job for a verdict")
    beside = job.paths.checkpoint.with_name(job.paths.checkpoint.name.removesuffix(CHECKPOINT_SUFFIX) + ".csv")
    if beside.exists() and not same_file(beside, job.paths.output):
        result.notes.append(f"this checkpoint's job writes {job.paths.output}, not {beside} beside it (a copied "
                            f"job folder?); {job.paths.output} is what was checked")
    in_output = _check_output(job, table, id_columns(job, table), result)

    input_ids = IdSet()
    lost: list[str] = []
    not_done: list[int] = []  # input rows, for the message
    n_lost = n_not_done = failed = 0
    scan = input_scan(job, table)
    for pending in scan:
        record_id = pending.record_id
        input_ids.add(record_id)
        if record_id in in_output:
            continue
        if record_id in cp.failed_ids:
            failed += 1
        elif record_id in cp.completed_ids:
            n_lost += 1
            if len(lost) < SHOW:
                lost.append(f"record {record_id} (input row {pending.record.row}) is not in the output, though the "
                            "checkpoint lists it as done")
        else:
            n_not_done += 1
            if len(not_done) < 10:
                not_done.append(pending.record.row)
    result.input_records = len(input_ids)
    result.failed = failed
    result.add("lost", lost, n_lost, "rows the checkpoint counts as done are gone from the output "
               "(`enrich.py --resume` redoes them)")
    if n_not_done:
        rows = ", ".join(map(str, not_done)) + (", ..." if n_not_done > len(not_done) else "")
        result.defects.append(Defect("not_done", f"{n_not_done} input record(s) are neither in the output nor "
                                     f"failed (input rows {rows}): not done yet; `enrich.py ... --resume` does them "
                                     "(`jobs.py missing` lists them)", n_not_done))
    strays = sum(1 for record_id in in_output if record_id not in input_ids)
    if strays:
        result.notes.append(f"{strays} output row(s) belong to no current input record (the input changed since "
                            "they were written?); they are kept and ignored")
    unreadable = scan.counts.unreadable or cp.input_errors
    if unreadable:
        result.notes.append(f"{unreadable} input row(s) cannot be read and are not expected in the output "
                            "(see the error log)")
    return result


def _check_output(job: JobStatus, table: Table, columns: list[str], result: Validation) -> IdSet:
    """Header, torn, ragged, duplicated and mismatched rows; returns the IDs of the good rows."""
    path = job.paths.output
    ids = IdSet()
    if not path.exists():
        if job.cp.completed_count:
            result.defects.append(Defect("lost", f"{path}: the output is missing, though the checkpoint lists "
                                                 f"{job.cp.completed_count} records as done"))
        return ids
    expected = output_columns(table.columns, job.cp.fields)
    filled_in_place = [c for c in table.columns if c in set(job.cp.fields)]  # input columns a stage fills
    width = len(expected)
    inputs = len(table.columns)
    rows = scan_output(path)
    header = next(rows, None)
    if header is None:
        return ids
    same_header = header.fields == expected
    if not same_header:
        result.add("header", [f"{path}: the header is {header.fields}, the job writes {expected}"], 1, "")
        width = len(header.fields or expected)  # judge the rows by the header they were written under
    ragged: list[str] = []
    mismatched: list[str] = []
    encoding: list[str] = []
    n_encoding = 0
    dupes: dict[str, list[int]] = {}
    n_ragged = n_mismatched = other_jobs = 0
    for row in rows:
        f = row.fields
        if not row.closed:
            result.defects.append(Defect("torn", f"{path}: the last row (line {row.line}) is torn: no newline "
                                                 "ends it (a crash or a write in progress); `enrich.py --resume` "
                                                 "cuts it and redoes that record"))
            continue
        if f is None or not row.is_record(width):
            n_ragged += 1
            if len(ragged) < SHOW:
                shape = "unreadable CSV" if f is None else f"{len(f)} fields, the header has {width}"
                ragged.append(f"{path}: line {row.line}: malformed row ({shape})")
            continue
        record_id = f[-2]
        if not _utf8(f):
            n_encoding += 1
            if len(encoding) < SHOW:
                encoding.append(f"{path}: line {row.line} is not UTF-8 (re-saved in another encoding, e.g. by "
                                "Excel as 'CSV (Comma delimited)')")
            continue
        if same_header and not _id_matches(dict(zip(table.columns, f[:inputs], strict=True)), columns, record_id,
                                           filled_in_place):
            # Not proof that its record is done: the values were changed after the run wrote them.
            n_mismatched += 1
            if len(mismatched) < SHOW:
                mismatched.append(f"{path}: line {row.line}: _record_id {record_id} does not match the row's "
                                  "input values (edited by hand?)")
            continue
        if record_id in ids:
            dupes.setdefault(record_id, []).append(row.line)
            continue
        ids.add(record_id)
        if f[-1] != job.cp.job_id:
            other_jobs += 1
    result.output_rows = len(ids) + sum(len(lines) for lines in dupes.values()) + n_mismatched
    result.add("ragged", ragged, n_ragged, "malformed rows")
    result.add("encoding", encoding, n_encoding, "rows that are not UTF-8")
    result.add("mismatch", mismatched, n_mismatched, "rows whose _record_id does not match their values")
    if dupes:
        first_lines = _first_lines(path, set(dupes), width)
        items = [f"record {rid} is in the output {len(lines) + 1} times (lines "
                 f"{', '.join(map(str, [first_lines.get(rid, 0), *lines]))})" for rid, lines in dupes.items()]
        result.add("duplicate", items, len(items), "records written more than once")
    if other_jobs:
        result.notes.append(f"{other_jobs} row(s) carry another _job_id than {job.cp.job_id} (written by an "
                            "earlier job on this output)")
    return ids


def _id_matches(values: dict[str, str], columns: list[str], record_id: str, filled_in_place: list[str]) -> bool:
    """Do the row's input values hash to its ID? An input column a stage fills in place held either the value the
    row shows or nothing (the stage filled the gap): each such column is tried both ways (at most 2^4 hashes)."""
    if make_record_id(values, columns) == record_id:
        return True
    maybe = [c for c in filled_in_place if c in columns and values.get(c, "").strip()][:4]
    for mask in range(1, 1 << len(maybe)):
        trial = dict(values)
        for i, column in enumerate(maybe):
            if mask >> i & 1:
                trial[column] = ""
        if make_record_id(trial, columns) == record_id:
            return True
    return False


def _utf8(fields: list[str]) -> bool:
    """The row was valid UTF-8 (scan_output keeps undecodable bytes as surrogates)."""
    text = "".join(fields)
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_lines(path: Path, wanted: set[str], width: int) -> dict[str, int]:
    """Line of the first occurrence of each duplicated ID (a second pass: duplicates are rare)."""
    found: dict[str, int] = {}
    for row in scan_output(path):
        if row.is_record(width) and row.fields is not None and row.fields[-2] in wanted:
            found.setdefault(row.fields[-2], row.line)
    return found
