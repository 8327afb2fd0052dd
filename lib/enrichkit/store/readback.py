"""Reading an output back: on every start (the truth about what is done: `recover_output` cuts a torn last row
and proves the part the checkpoint counts is unchanged), and, read-only, for the job tools (`scan_output`)."""

from __future__ import annotations

import csv
import io
import math
import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from enrichkit.errors import ConfigError
from enrichkit.store.idset import IdSet
from enrichkit.store.output import BOM, ID_COLUMN, JOB_COLUMN, RECORD_ID

_TAIL_CHUNK = 1 << 20


def file_crc32(path: Path, size: int, *, start: int = 0, crc: int = 0) -> int | None:
    """CRC-32 of bytes `start` to `size` of `path`, continuing `crc` (the CRC of what comes before `start`);
    None when the file is shorter."""
    left = size - start
    with open(path, "rb") as f:
        f.seek(start)
        while left > 0:
            chunk = f.read(min(left, _TAIL_CHUNK))
            if not chunk:
                return None
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
    return crc


@dataclass
class Recovered:
    """What the start of a run found in the output."""

    ids: IdSet  # IDs of the whole rows read (after `from_offset` when a verified prefix was skipped)
    rows: int = 0
    torn_bytes: int = 0  # bytes cut from the end (a row torn by a crash)
    bad_rows: int = 0  # malformed rows in the middle (an edited file); ignored
    from_offset: int = 0  # > 0: the bytes before it matched the checkpoint's CRC and were not re-read
    crc32: int = 0  # of the whole file as it is now (after any cut)
    size: int = 0
    filled: Counter[str] = field(default_factory=Counter)  # field -> non-empty count in the rows read
    job_ids: Counter[str] = field(default_factory=Counter)  # the `_job_id`s of the rows read
    repeated: list[tuple[str, int]] = field(default_factory=list)  # (record ID, line) of rows whose ID came before
    header_found: bool = False
    unbooked_usd: float = 0.0  # the `_cost_usd` of the rows read that `unbooked` says the checkpoint has not counted
    unbooked_rows: int = 0


def recover_output(path: str | Path, columns: Sequence[str], fields: Sequence[str] = (),
                   trusted: tuple[int, int] | None = None,
                   unbooked: Callable[[str, str], bool] | None = None) -> Recovered:
    """Read the `_record_id`s back, check the header and cut a torn last row off.

    `trusted` = (size, crc32) from the checkpoint: when the file's first `size` bytes still have that
    CRC, only what follows is read; the checkpoint already lists their IDs. Raises ConfigError when the
    header is not the one this job writes (a UTF-8 BOM and CRLF line ends, as Excel saves, are fine).
    `unbooked(record_id, job_id)`: whether a row's `_cost_usd` is missing from the checkpoint's totals (a row
    written after its last write, before a crash); those costs are summed into `unbooked_usd`.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return Recovered(IdSet())
    header_bytes = header_line(columns)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(header_bytes) + len(BOM))
    body = head.removeprefix(BOM)  # --excel writes one before the header
    if size - (len(head) - len(body)) < len(header_bytes) and header_bytes.startswith(body):
        _truncate(path, 0)  # a crash while writing the header itself
        return Recovered(IdSet(), torn_bytes=size)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            check_header(path, next(csv.reader(f), []), columns)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    start = 0
    start_crc = 0
    if trusted and trusted[0] <= size and file_crc32(path, trusted[0]) == trusted[1]:
        start, start_crc = trusted
    try:
        rec = _read_rows(path, columns, fields, start, unbooked)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    if rec.torn_bytes:
        _truncate(path, size - rec.torn_bytes)
    rec.from_offset = start
    rec.header_found = True
    rec.size = size - rec.torn_bytes
    rec.crc32 = file_crc32(path, rec.size, start=start, crc=start_crc) or 0
    return rec


def _read_rows(path: Path, columns: Sequence[str], fields: Sequence[str], start: int,
               unbooked: Callable[[str, str], bool] | None = None) -> Recovered:
    width = len(columns)
    field_index = [(name, columns.index(name)) for name in fields if name in columns]
    rec = Recovered(IdSet())
    prev_good: list[str] | None = None
    last_good: list[str] | None = None
    last_ok = True

    def accept(row: list[str], line: int) -> None:
        if row[-2] in rec.ids:
            rec.repeated.append((row[-2], line))
            return
        rec.ids.add(row[-2])
        rec.rows += 1
        rec.job_ids[row[-1]] += 1
        for name, i in field_index:
            if row[i].strip():
                rec.filled[name] += 1
        if unbooked is not None and row[-3] and unbooked(row[-2], row[-1]):
            try:
                cost = float(row[-3])
            except ValueError:
                return
            if math.isfinite(cost) and cost > 0:
                rec.unbooked_usd += cost + 5e-7  # written to 6 decimals: never count less than it was
                rec.unbooked_rows += 1

    last_line = 0
    with open(path, "rb") as raw:
        raw.seek(start)
        # Strict UTF-8: an output re-saved in another encoding must not be appended to (see `_not_utf8`).
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig" if not start else "utf-8", newline=""))
        if not start:
            next(reader, None)  # the header, checked by the caller
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:
                row = []
            if not last_ok:
                rec.bad_rows += 1  # a bad row followed by another row was not torn by a crash: an edit
            if len(row) == width and RECORD_ID.match(row[-2]) and row[-1]:
                if last_good is not None:
                    accept(last_good, last_line)  # confirmed: a row follows it
                prev_good, last_good, last_ok, last_line = last_good, row, True, line
            else:
                last_ok = False
    if last_ok and _last_byte(path) == b"\n":
        if last_good is not None:
            accept(last_good, last_line)
        return rec
    # The tail is torn. If the last row parsed whole, only its newline (or part of its job id) is
    # missing: it is torn too, and the cut goes after the row before it.
    if last_ok:
        keep = prev_good
    else:
        keep = last_good
        if last_good is not None:
            accept(last_good, last_line)
    size = path.stat().st_size
    cut = end_of_row(path, keep) if keep is not None else (start or _end_of_first_line(path))
    rec.torn_bytes = size - cut
    return rec


def _not_utf8(path: Path) -> ConfigError:
    """An output that is no longer UTF-8: re-saved by a spreadsheet in a Windows code page, most likely."""
    line = 1
    with open(path, "rb") as f:
        for line, raw in enumerate(f, start=1):  # noqa: B007 - the line is what the message needs
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                break
    return ConfigError(f"{path}: line {line} is not UTF-8 (the file was re-saved in another encoding, e.g. by Excel "
                       "as 'CSV (Comma delimited)'); save it as 'CSV UTF-8', or put back the file enrichkit wrote, "
                       "then --resume")


def header_line(columns: Sequence[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    return buf.getvalue().encode("utf-8")


def check_header(path: Path, header: list[str], columns: Sequence[str]) -> None:
    if header == list(columns):
        return
    if len(header) < 2 or header[-2:] != [ID_COLUMN, JOB_COLUMN]:
        raise ConfigError(f"{path}: exists but is not an enrichkit output (no {ID_COLUMN} column); "
                          "choose another --output")
    raise ConfigError(f"{path}: its columns differ from what this job writes (the input header or the "
                      "stages changed); use another --output")


def _end_of_first_line(path: Path) -> int:
    """Just after the header (its line end, LF or CRLF, included); a header holds no quoted newline."""
    with open(path, "rb") as f:
        return len(f.readline())


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def end_of_row(path: Path, row: list[str]) -> int:
    """Byte offset just after `row`. Every row ends with `,<record id>,<job id>` and a line end, written
    unquoted, so its end is found by searching backwards from the end of the file."""
    markers = [f",{row[-2]},{row[-1]}{end}".encode() for end in ("\r\n", "\n")]
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        span = _TAIL_CHUNK
        while True:
            start = max(0, size - span)
            f.seek(start)
            data = f.read(size - start)
            for marker in markers:
                pos = data.rfind(marker)
                if pos != -1:
                    return start + pos + len(marker)
            if start == 0:
                raise ConfigError(f"{path}: cannot find where its last complete row ends; "
                                  "check the file's end by hand")
            span *= 4


# --- read-only scanning, for the job tools -------------------------------------------------------


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
        return self.closed and f is not None and len(f) == width and bool(RECORD_ID.match(f[-2])) and bool(f[-1])


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
                if pos == 0 and raw.startswith(BOM):
                    raw = raw[len(BOM):]
                    pos += len(BOM)
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
