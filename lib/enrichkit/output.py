"""The output CSV: read back on start (the truth about what is done), appended as records finish.

Each row goes out in one write followed by a flush; a crash mid-write leaves at most one torn
last row, which `recover_output` cuts off before anything else is appended.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from enrichkit.errors import ConfigError
from enrichkit.idset import IdSet

ID_COLUMN = "_record_id"
JOB_COLUMN = "_job_id"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_RECORD_ID = re.compile(r"^[0-9a-f]{16}$")
_TAIL_CHUNK = 1 << 20
_DIGEST_SPAN = 4096


def output_columns(input_columns: Sequence[str], fields: Sequence[str]) -> list[str]:
    return [*input_columns, *fields, ID_COLUMN, JOB_COLUMN]


def neutralise(value: str) -> str:
    """Prefix `'` to a value a spreadsheet would run as a formula; plain numbers such as -3.5 stay."""
    if value.startswith(_FORMULA_START) and not _NUMBER.match(value):
        return "'" + value
    return value


@dataclass
class Recovered:
    ids: IdSet  # the IDs found (only those after `from_offset` when a trusted prefix was skipped)
    rows: int
    torn_bytes: int  # bytes cut from the end (a row torn by a crash)
    bad_rows: int  # rows in the middle with the wrong shape (an edited file); ignored
    from_offset: int = 0  # > 0: the bytes before it matched the checkpoint's fingerprint and were not re-read


def tail_digest(path: str | Path, size: int) -> str:
    """Fingerprint of the output's bytes just before `size`, kept in the checkpoint with `size`."""
    with open(path, "rb") as f:
        f.seek(max(0, size - _DIGEST_SPAN))
        return hashlib.sha256(f.read(size - max(0, size - _DIGEST_SPAN))).hexdigest()[:32]


def recover_output(path: str | Path, columns: Sequence[str], trusted: tuple[int, str] | None = None) -> Recovered:
    """Read the `_record_id`s back, check the header and cut a torn last row off.

    `trusted` = (size, digest) from the checkpoint: when the file still starts with exactly those
    bytes (checked by the digest of their end), only what follows is read, so resuming a job of a
    million rows does not re-parse them; the checkpoint already lists their IDs.
    Raises ConfigError when the existing header is not the one this job writes.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return Recovered(IdSet(), 0, 0, 0)
    header_bytes = _header_line(columns)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(header_bytes))
    if size < len(header_bytes) and header_bytes.startswith(head):
        _truncate(path, 0)  # a crash while writing the header itself
        return Recovered(IdSet(), 0, size, 0)
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        _check_header(path, next(csv.reader(f), []), columns)
    start = 0
    if trusted and len(header_bytes) <= trusted[0] <= size and tail_digest(path, trusted[0]) == trusted[1]:
        start = trusted[0]
    width = len(columns)
    ids = IdSet()
    rows = bad = 0
    prev_good: list[str] | None = None
    last_good: list[str] | None = None
    last_ok = True
    with open(path, "rb") as raw:
        raw.seek(start)
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline=""))
        if not start:
            next(reader, None)  # the header, checked above
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:
                row = []
            if not last_ok:
                bad += 1  # a bad row followed by another row was not torn by a crash: an edit
            if len(row) == width and _RECORD_ID.match(row[-2]) and row[-1]:
                if last_good is not None:
                    ids.add(last_good[-2])  # confirmed: a row follows it
                    rows += 1
                prev_good, last_good, last_ok = last_good, row, True
            else:
                last_ok = False
    if last_ok and _last_byte(path) == b"\n":
        if last_good is not None:
            ids.add(last_good[-2])
            rows += 1
        return Recovered(ids, rows, 0, bad, start)
    # The tail is torn. If the last row parsed whole, only its newline (or part of its job id) is
    # missing: it is torn too, and the cut goes after the row before it.
    # (In both cases every good row before `last_good` is already in `ids`.)
    if last_ok:
        keep = prev_good  # last_good is dropped; its ID was never added
    else:
        keep = last_good
        if last_good is not None:
            ids.add(last_good[-2])
            rows += 1
    cut = _end_of_row(path, keep) if keep is not None else (start or len(header_bytes))
    _truncate(path, cut)
    return Recovered(ids, rows, size - cut, bad, start)


def _header_line(columns: Sequence[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    return buf.getvalue().encode("utf-8")


def _check_header(path: Path, header: list[str], columns: Sequence[str]) -> None:
    if header == list(columns):
        return
    if len(header) < 2 or header[-2:] != [ID_COLUMN, JOB_COLUMN]:
        raise ConfigError(f"{path}: exists but is not an enrichkit output (no {ID_COLUMN} column); "
                          "choose another --output")
    raise ConfigError(f"{path}: its columns differ from what this job writes (the input header or the "
                      "stages changed); use another --output, or --fresh to start over")


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _end_of_row(path: Path, row: list[str]) -> int:
    """Byte offset just after `row`. Every row ends with `,<record id>,<job id>\\n`, written
    unquoted, so its end is found by searching backwards from the end of the file."""
    marker = f",{row[-2]},{row[-1]}\n".encode()
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        span = _TAIL_CHUNK
        while True:
            start = max(0, size - span)
            f.seek(start)
            pos = f.read(size - start).rfind(marker)
            if pos != -1:
                return start + pos + len(marker)
            if start == 0:
                raise ConfigError(f"{path}: cannot find where its last complete row ends; "
                                  "check the file's end by hand")
            span *= 4


class OutputWriter:
    """Appends one row per finished record: one write, one flush. Used from one thread."""

    def __init__(self, path: str | Path, columns: Sequence[str], enriched: Sequence[str], job_id: str) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self._value_columns = self.columns[:-2]
        self._enriched = set(enriched)
        self._job_id = job_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\n")
        if new:
            self._emit(self.columns)

    def write(self, values: dict[str, str], record_id: str, *, flush: bool = True) -> None:
        """One row in one write; `flush=False` lets a batch of rows finishing together share one flush."""
        get = values.get
        row = [neutralise(get(c, "")) if c in self._enriched else get(c, "") for c in self._value_columns]
        row += [record_id, self._job_id]
        self._emit(row, flush)

    def _emit(self, row: list[str], flush: bool = True) -> None:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        self._csv.writerow(row)
        self._file.write(buf.getvalue())
        if flush:
            self._file.flush()

    def flush(self) -> None:
        self._file.flush()

    def size(self) -> int:
        self._file.flush()
        return os.fstat(self._file.fileno()).st_size

    def sync(self) -> None:
        """fsync: called before every checkpoint write, so the checkpoint never claims rows a reboot could lose."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


# --- read-only scanning, for the job tools (`enrichkit.jobstate`) ------------------------------


@dataclass(frozen=True, slots=True)
class OutputRow:
    """One CSV row of an output file, as `scan_output` met it."""

    line: int  # 1-based physical line where the row starts
    end: int  # byte offset just after the row
    fields: list[str] | None  # None: the csv module could not parse it
    closed: bool  # ended by a newline outside quotes; False only for a torn last row

    def is_record(self, width: int) -> bool:
        """A whole, well-formed record row: closed, `width` fields, a record ID and a job ID."""
        f = self.fields
        return self.closed and f is not None and len(f) == width and bool(_RECORD_ID.match(f[-2])) and bool(f[-1])


def scan_output(path: str | Path, size: int | None = None) -> Iterator[OutputRow]:
    """Every row of an output CSV, the header first, with where it ends. Never writes anything
    (unlike `recover_output`), so it is safe on a file a live run is appending to.

    Reads at most `size` bytes (default: the size at the call), so a growing file is read as a
    snapshot; a row the writer has not finished comes out with `closed=False`.
    """
    with open(path, "rb") as f:
        limit = os.fstat(f.fileno()).st_size if size is None else size
        pos = lines = 0
        newline = exhausted = False

        def physical_lines() -> Iterator[str]:
            nonlocal pos, lines, newline, exhausted
            while pos < limit:
                raw = f.readline(limit - pos)
                if not raw:
                    break
                pos += len(raw)
                lines += 1
                newline = raw.endswith(b"\n")
                yield raw.decode("utf-8", "surrogateescape")
            exhausted = True

        reader = csv.reader(physical_lines())
        start = 1
        while True:
            fields: list[str] | None
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error:
                fields = None
            # The csv reader returns a row as soon as a newline ends it outside quotes; if it had to
            # ask for more text and met the end of the snapshot, the row is torn.
            yield OutputRow(start, pos, fields, newline and not exhausted)
            start = lines + 1
