"""Input tables (CSV, JSONL, XLSX) streamed as records, and record IDs.

A record is one input row as an ordered mapping column -> string. Rows that cannot be read
come out as `BadRow` (an input error for that row, never a crash); a file that cannot be read
at all raises `InputError` before anything is sent anywhere.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import operator
import os
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from enrichkit.errors import InputError

# Separator for the hashed ID columns: NUL cannot occur in a value (a row holding one is an input error).
_ID_SEPARATOR = "\x00"
SUPPORTED = (".csv", ".jsonl", ".xlsx")

# A CSV field may legitimately be large (a scraped page); the default 128 KiB cap would turn it into an input error.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True, slots=True)
class Record:
    """One readable input row. `row` is its 1-based position among the data rows."""

    row: int
    values: dict[str, str]
    end: int = 0  # byte offset just after the row (0: not known, as in XLSX)


@dataclass(frozen=True, slots=True)
class BadRow:
    """One unreadable input row: counted and logged as an `input_error`, never fatal."""

    row: int
    message: str
    end: int = 0


class RecordIds:
    """Record ID = 16 hex chars of a stable hash of the ID columns' values, whitespace-stripped and
    joined by NUL (a value cannot hold one: such a row is an input error). Built once per run: hot path."""

    def __init__(self, id_columns: Sequence[str]) -> None:
        self._get = operator.itemgetter(*id_columns)
        self._single = len(id_columns) == 1

    def __call__(self, values: dict[str, str]) -> str:
        parts = self._get(values)
        text = parts.strip() if self._single else _ID_SEPARATOR.join([p.strip() for p in parts])
        return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def make_record_id(values: dict[str, str], id_columns: Sequence[str]) -> str:
    """The ID of one record (see `RecordIds`)."""
    return RecordIds(id_columns)(values)


class InputTable:
    """An input file whose header has been checked; `rows()` streams it from the start each call."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.kind = self.path.suffix.lower()
        if self.kind not in SUPPORTED:
            raise InputError(f"unsupported input type {self.kind or '(none)'}; use .csv, .jsonl or .xlsx",
                             str(path))
        if not self.path.exists():
            raise InputError("no such file", str(path))
        if not self.path.is_file():
            raise InputError("not a file", str(path))
        stat = self.path.stat()
        self.size = stat.st_size
        self.mtime = stat.st_mtime
        if self.size == 0:
            raise InputError("the file is empty (expected a header row)", str(path))
        self.columns = self._read_header()

    def _read_header(self) -> list[str]:
        header: list[str] | None = None
        try:
            for item in self._raw_rows():
                header = item
                break
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
            raise InputError(f"cannot read the header: {exc}", str(self.path)) from None
        if header is None or not any(h.strip() for h in header):
            raise InputError("no header row found", str(self.path))
        header = [h.strip() for h in header]
        blank = [i + 1 for i, h in enumerate(header) if not h]
        if blank:
            raise InputError(f"the header has an empty column name (column {blank[0]})", str(self.path))
        seen: set[str] = set()
        dupes = sorted({h for h in header if h in seen or seen.add(h)})  # type: ignore[func-returns-value]
        if dupes:
            raise InputError(f"duplicate column names in the header: {', '.join(dupes)}", str(self.path))
        return header

    def require_columns(self, names: Sequence[str], what: str) -> None:
        """Fail (exit 2) if any of `names` is not a column of this file."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise InputError(
                f"{what} {', '.join(repr(m) for m in missing)} not in the header "
                f"(columns: {', '.join(self.columns)})", str(self.path))

    def rows(self, start: tuple[int, int] | None = None) -> Iterator[Record | BadRow]:
        """Every data row in file order, as `Record` or `BadRow`; constant memory.

        `start` = (byte offset, row number) of a row's end, as a Record's `end` and `row` gave it: the
        rows after it, without reading those before (CSV and JSONL; XLSX always starts at the top).
        """
        offset, row = start if start and self.kind != ".xlsx" else (0, 0)
        if self.kind == ".csv":
            yield from self._csv_rows(offset, row)
        elif self.kind == ".jsonl":
            yield from self._jsonl_rows(offset, row)
        else:
            yield from self._xlsx_rows()

    def estimate_rows(self) -> int:
        """Data rows, estimated fast (newlines; a quoted field may hold more), for the first progress bar."""
        if self.kind == ".xlsx":
            import openpyxl

            wb = openpyxl.load_workbook(self.path, read_only=True)
            try:
                return max(0, (wb.worksheets[0].max_row or 1) - 1) if wb.worksheets else 0
            finally:
                wb.close()
        lines = 0
        last = b"\n"
        with open(self.path, "rb") as f:
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        lines += last != b"\n"
        return max(0, lines - (self.kind == ".csv"))

    # --- per-format readers -------------------------------------------------------------------

    def _raw_rows(self) -> Iterator[list[str]]:
        if self.kind == ".csv":
            with open(self.path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
                for row in csv.reader(f):
                    if row:
                        yield row
        elif self.kind == ".jsonl":
            with open(self.path, encoding="utf-8-sig") as f:
                for line in f:
                    if line.strip():
                        obj = json.loads(line)
                        if not isinstance(obj, dict):
                            raise ValueError("the first line is not a JSON object")
                        yield list(obj)
        else:
            yield from self._xlsx_raw()

    def _csv_rows(self, offset: int, first_row: int) -> Iterator[Record | BadRow]:
        columns = self.columns
        width = len(columns)
        with open(self.path, "rb") as f:
            f.seek(offset)
            consumed = offset

            def lines() -> Iterator[str]:
                # Binary lines decoded one by one, so every row's end is known as a byte offset (for resume).
                nonlocal consumed
                for raw in f:
                    if consumed == 0 and raw.startswith(b"\xef\xbb\xbf"):
                        raw = raw[3:]  # a BOM
                        consumed += 3
                    consumed += len(raw)
                    yield raw.decode("utf-8", "surrogateescape")

            reader = csv.reader(lines())
            row_no = first_row if offset else -1  # the header is row 0
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    row_no += 1
                    yield BadRow(row_no, f"unreadable CSV row: {exc}", consumed)
                    continue
                if not row:
                    continue  # blank line
                row_no += 1
                if row_no == 0:
                    continue
                if len(row) != width:
                    yield BadRow(row_no, f"ragged row: {len(row)} fields, the header has {width}", consumed)
                    continue
                problem = _bad_text(row)
                if problem:
                    yield BadRow(row_no, problem, consumed)
                    continue
                yield Record(row_no, dict(zip(columns, row, strict=True)), consumed)

    def _jsonl_rows(self, offset: int, first_row: int) -> Iterator[Record | BadRow]:
        columns = self.columns
        known = set(columns)
        with open(self.path, "rb") as f:
            f.seek(offset)
            consumed = offset
            row_no = first_row
            for raw in f:
                consumed += len(raw)
                if not raw.strip():
                    continue
                row_no += 1
                try:
                    obj = json.loads(raw.decode("utf-8-sig"))
                except (UnicodeDecodeError, ValueError) as exc:
                    yield BadRow(row_no, f"not valid JSON: {exc}", consumed)
                    continue
                if not isinstance(obj, dict):
                    yield BadRow(row_no, "not a JSON object", consumed)
                    continue
                extra = [k for k in obj if k not in known]
                if extra:
                    yield BadRow(row_no, f"keys not in the first object: {', '.join(map(str, extra))}", consumed)
                    continue
                values = {c: stringify(obj.get(c)) for c in columns}
                problem = _bad_text(values.values())
                if problem:
                    yield BadRow(row_no, problem, consumed)
                    continue
                yield Record(row_no, values, consumed)

    def _xlsx_raw(self) -> Iterator[list[str]]:
        import openpyxl  # only needed for XLSX input
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            wb = openpyxl.load_workbook(self.path, read_only=True, data_only=True)
        except (InvalidFileException, zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
            raise ValueError(f"not a readable XLSX workbook ({exc.__class__.__name__})") from None
        try:
            if not wb.worksheets:
                return
            for cells in wb.worksheets[0].iter_rows(values_only=True):
                values = [stringify(v) for v in cells]
                while values and values[-1] == "":
                    values.pop()
                if values:
                    yield values
        finally:
            wb.close()

    def _xlsx_rows(self) -> Iterator[Record | BadRow]:
        columns = self.columns
        width = len(columns)
        row_no = -1
        for values in self._xlsx_raw():
            row_no += 1
            if row_no == 0:
                continue
            if len(values) > width:
                yield BadRow(row_no, f"ragged row: {len(values)} cells, the header has {width}")
                continue
            values += [""] * (width - len(values))
            problem = _bad_text(values)
            if problem:
                yield BadRow(row_no, problem)
                continue
            yield Record(row_no, dict(zip(columns, values, strict=True)))


def _bad_text(values: object) -> str | None:
    text = "".join(values)  # type: ignore[arg-type]
    if "\x00" in text:
        return "the row contains a NUL character"
    if not text.isascii():  # (the common all-ASCII row skips the encode)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "the row contains bytes that are not valid UTF-8"
    return None


def stringify(value: object) -> str:
    """A value from JSON, a spreadsheet or a python stage as a CSV cell (12.0 -> "12", None -> "")."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
