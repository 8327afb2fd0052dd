"""Input tables (CSV/TSV, JSONL, XLSX) streamed as records, and record IDs.

A record is one input row as an ordered mapping column -> string. Rows that cannot be read
come out as `BadRow` (an input error for that row, never a crash), rows with no value at all as
`EmptyRow`; a file that cannot be read at all raises `InputError` before anything is sent anywhere.
Encoding (BOM), delimiter and line ends are sniffed unless given.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import operator
import os
import sys
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from enrichkit.errors import InputError
from enrichkit.tables import workbooks
from enrichkit.tables.sniffing import (
    DELIMITERS,
    SAMPLE_BYTES,
    SEPARATORS,
    TextFormat,
    delimiter_name,
    sniff_text,
    split_lines,
)

# Separator for the hashed ID columns: NUL cannot occur in a value (a row holding one is an input error).
_ID_SEPARATOR = "\x00"
SUPPORTED = (".csv", ".tsv", ".jsonl", ".xlsx")
SAMPLE_ROWS = 1_000  # opening a table reads at most this many rows (and SAMPLE_BYTES) to judge the whole file
__all__ = ["DELIMITERS", "BadRow", "EmptyRow", "InputTable", "Record", "RecordIds", "RowItem", "make_record_id",
           "stringify"]
_NOT_VALID = "the row contains bytes that are not valid"
_FORMULA = "is a formula with no computed value"
_RAGGED = "ragged row"
_UNREADABLE_CSV = "unreadable CSV row"

# A CSV field may legitimately be large (a scraped page); the default 128 KiB cap would turn it into an input error.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True, slots=True)
class Record:
    """One readable input row. `row` is its 1-based position among the data rows."""

    row: int
    values: dict[str, str]
    end: int = 0  # byte offset just after the row (0: not known, as in XLSX and UTF-16)


@dataclass(frozen=True, slots=True)
class BadRow:
    """One unreadable input row: counted and logged as an `input_error`, never fatal."""

    row: int
    message: str
    end: int = 0


@dataclass(frozen=True, slots=True)
class EmptyRow:
    """A row with no value at all (Excel's trailing `,,,`): skipped and counted, never sent anywhere."""

    row: int
    end: int = 0


RowItem = Record | BadRow | EmptyRow


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
    """An input file whose format and header have been checked; `rows()` streams it from the start each call.

    `encoding` and `delimiter` are the ones in force, given or sniffed (None where they do not apply).
    Opening reads a bounded sample and raises `InputError` if the file as a whole cannot be right.
    """

    def __init__(self, path: str | os.PathLike[str], *, encoding: str | None = None,
                 delimiter: str | None = None) -> None:
        self.path = Path(path)
        self.kind = self.path.suffix.lower()
        if self.kind not in SUPPORTED:
            raise InputError(f"unsupported input type {self.kind or '(none)'}; use .csv, .tsv, .jsonl or .xlsx "
                             "(a tab-separated .txt from Excel: rename it .tsv)", str(path))
        if not self.path.exists():
            raise InputError("no such file", str(path))
        if not self.path.is_file():
            raise InputError("not a file", str(path))
        stat = self.path.stat()
        self.size = stat.st_size
        self.mtime = stat.st_mtime
        if self.size == 0:
            raise InputError("the file is empty (expected a header row)", str(path))
        # XLSX: no text format; rows have no byte offsets (rows(start) reads from the top).
        self._fmt = TextFormat("xlsx", "utf-8", 0, "strict", seekable=False)
        if self.kind == ".xlsx":
            for flag, value in (("--encoding", encoding), ("--delimiter", delimiter)):
                if value is not None:
                    raise InputError(f"{flag} does not apply to .xlsx input", str(path))
        else:
            with open(self.path, "rb") as f:
                self._fmt = sniff_text(f.read(SAMPLE_BYTES), self.kind, encoding, delimiter, str(path))
        self.encoding = None if self.kind == ".xlsx" else self._fmt.encoding
        self.delimiter = self._fmt.delimiter
        if self.kind == ".xlsx":
            source = workbooks.sheet_values(self.path, True, stringify)  # the header and the sample from one pass
            try:
                self.columns = self._read_header(values for values, _ in source if any(values))
                self._check_sample(self._xlsx_rows(source, header_seen=True))
            finally:
                source.close()
            return
        self.columns = self._read_header(self._raw_header())
        if self.kind in (".csv", ".tsv"):
            self._check_one_column_header(given=delimiter is not None)
        self._check_sample(self._jsonl_rows(0, 0) if self.kind == ".jsonl" else self._csv_rows(0, 0))

    def describe_format(self) -> str:
        """What the file was read as, for messages: "utf-8, ',' separated, 5 columns"."""
        n = len(self.columns)
        if self.kind == ".xlsx":
            return f"xlsx (first sheet), {n} column{'s' * (n != 1)}"
        if self.kind == ".jsonl":
            return f"{self.encoding} JSON lines, {n} key{'s' * (n != 1)}"
        ends = ", CR line ends" if self._fmt.newline == b"\r" else ""
        return f"{self.encoding}, {delimiter_name(self.delimiter or ',')} separated{ends}, {n} column{'s' * (n != 1)}"

    def unreadable_error(self, bad: int, rows: int, example: BadRow | None = None, *,
                         sample: bool = False) -> InputError:
        """The whole-file error for `bad` unreadable rows among `rows` non-empty ones (the caller's too,
        when a full pass ends with no record): what was seen and which flag to use."""
        scope = f"the first {rows}" if sample else str(rows)
        seen = f" (row {example.row}: {example.message})" if example else ""
        message = example.message if example else ""
        if self.kind == ".xlsx":
            hint = ("open and save the workbook in Excel or LibreOffice so its formulas get values"
                    if _FORMULA in message else "check the first sheet's header row and cells")
        elif self.kind == ".jsonl":
            hint = "each line must be one JSON object; check --encoding"
        elif _NOT_VALID in message:
            hint = "give the file's encoding with --encoding (cp1252 for most files from Windows Excel)"
        elif message.startswith((_RAGGED, _UNREADABLE_CSV)):
            hint = "give the separator with --delimiter (',' ';' tab '|') and check --encoding"
        else:
            hint = "check --encoding and --delimiter"
        return InputError(f"{bad} of {scope} rows cannot be read as {self.describe_format()}{seen}; {hint}",
                          str(self.path))

    def require_columns(self, names: Sequence[str], what: str) -> None:
        """Fail (exit 2) if any of `names` is not a column of this file."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise InputError(
                f"{what} {', '.join(repr(m) for m in missing)} not in the header "
                f"(columns: {', '.join(self.columns)})", str(self.path))

    def rows(self, start: tuple[int, int] | None = None) -> Iterator[RowItem]:
        """Every data row in file order, as `Record`, `BadRow` or `EmptyRow`; constant memory.

        `start` = (byte offset, row number) of a row's end, as an item's `end` and `row` gave it: the
        rows after it, without reading those before. Where offsets are not known (XLSX, UTF-16: `end`
        is 0) the rows come from the top.
        """
        offset, row = start if start and self._fmt.seekable else (0, 0)
        if self.kind == ".xlsx":
            yield from self._xlsx_rows(workbooks.sheet_values(self.path, None, stringify))
        elif self.kind == ".jsonl":
            yield from self._jsonl_rows(offset, row)
        else:
            yield from self._csv_rows(offset, row)

    def estimate_rows(self) -> int:
        """Data rows, estimated fast (line ends; a quoted field may hold more), for the first progress bar."""
        if self.kind == ".xlsx":
            return workbooks.data_rows(self.path)
        newline = self._fmt.newline
        lines = 0
        last = newline
        with open(self.path, "rb") as f:
            while chunk := f.read(1 << 20):
                lines += chunk.count(newline)
                last = chunk[-1:]
        lines += last != newline
        return max(0, lines - (self.kind != ".jsonl"))

    # --- sniffing and whole-file checks ------------------------------------------------------------

    def _check_one_column_header(self, *, given: bool) -> None:
        # A one-column header holding another separator is a wrong delimiter; a given one is trusted where the
        # other separators only occur inside quotes.
        if len(self.columns) != 1:
            return
        for char in SEPARATORS:
            if char != self.delimiter and char in self.columns[0] and (self._fmt.unquoted_count(char) or not given):
                flag = "tab" if char == "\t" else f"'{char}'"
                raise InputError(f"the header is one column {self.columns[0]!r} (read as {self.describe_format()}); "
                                 f"it looks like {delimiter_name(char)}-separated: use --delimiter {flag}",
                                 str(self.path))

    def _check_sample(self, items: Generator[RowItem, None, None]) -> None:
        """Stop before any request when most of the first rows are unreadable (or none is a record)."""
        records = bad = 0
        example: BadRow | None = None
        for item in items:
            if isinstance(item, Record):
                records += 1
            elif isinstance(item, BadRow):
                bad += 1
                example = example or item
            if item.row >= SAMPLE_ROWS or item.end >= SAMPLE_BYTES:
                break
        items.close()
        if bad > records:
            raise self.unreadable_error(bad, bad + records, example, sample=True)

    def _read_header(self, raw: Iterator[list[str]]) -> list[str]:
        try:
            header = next(raw, None)
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
            raise InputError(f"cannot read the header: {exc}", str(self.path)) from None
        if header is None or not any(h.strip() for h in header):
            raise InputError("no header row found", str(self.path))
        header = [h.strip() for h in header]
        blank = [i + 1 for i, h in enumerate(header) if not h]
        if blank:
            raise InputError(f"the header has an empty column name (column {blank[0]})", str(self.path))
        if _bad_text(header, self._label()):
            raise InputError(f"the header has bytes that are not valid {self._label()}; give the file's encoding "
                             "with --encoding (cp1252 for most files from Windows Excel)", str(self.path))
        seen: set[str] = set()
        dupes = sorted({h for h in header if h in seen or seen.add(h)})  # type: ignore[func-returns-value]
        if dupes:
            raise InputError(f"duplicate column names in the header: {', '.join(dupes)}", str(self.path))
        return header

    def _raw_header(self) -> Iterator[list[str]]:
        fmt = self._fmt
        with open(self.path, "rb") as f:
            f.seek(fmt.bom)
            if self.kind == ".jsonl":
                for raw in f:
                    if raw.strip():
                        obj = json.loads(raw.decode(fmt.codec))
                        if not isinstance(obj, dict):
                            raise ValueError("the first line is not a JSON object")
                        yield list(obj)
                return
            text = io.TextIOWrapper(f, encoding=fmt.codec, errors=fmt.errors, newline="")
            try:
                yield from (row for row in csv.reader(text, delimiter=self.delimiter or ",") if row)
            finally:
                text.detach()  # the `with` closes the file

    def _label(self) -> str:
        return "UTF-8" if self._fmt.codec == "utf-8" else self._fmt.encoding

    # --- per-format readers -------------------------------------------------------------------

    def _csv_rows(self, offset: int, first_row: int) -> Generator[RowItem, None, None]:
        columns = self.columns
        width = len(columns)
        fmt, label = self._fmt, self._label()
        codec, errors = fmt.codec, fmt.errors
        with open(self.path, "rb") as f:
            f.seek(offset or fmt.bom)
            consumed = offset or fmt.bom
            text: io.TextIOWrapper | None = None
            if not fmt.seekable:  # (UTF-16 and the like: \n is not one byte, so no offsets)
                consumed = 0
                text = io.TextIOWrapper(f, encoding=codec, errors=errors, newline="")
                lines: Iterable[str] = text
            else:
                source = f if fmt.newline == b"\n" else split_lines(f, fmt.newline)

                def decoded() -> Iterator[str]:
                    # Binary lines decoded one by one, so every row's end is known as a byte offset (for resume).
                    nonlocal consumed
                    for raw in source:
                        consumed += len(raw)
                        yield raw.decode(codec, errors)

                lines = decoded()
            reader = csv.reader(lines, delimiter=self.delimiter or ",")
            row_no = first_row if offset else -1  # the header is row 0
            try:
                while True:
                    try:
                        row = next(reader)
                    except StopIteration:
                        return
                    except csv.Error as exc:
                        row_no += 1
                        yield BadRow(row_no, f"{_UNREADABLE_CSV}: {exc}", consumed)
                        continue
                    if not row:
                        continue  # blank line
                    row_no += 1
                    if row_no == 0:
                        continue
                    joined = "".join(row)
                    if not joined or joined.isspace():
                        yield EmptyRow(row_no, consumed)
                    elif len(row) != width:
                        yield BadRow(row_no, f"{_RAGGED}: {len(row)} fields, the header has {width}", consumed)
                    elif "\x00" in joined:
                        yield BadRow(row_no, "the row contains a NUL character", consumed)
                    elif not joined.isascii() and not _encodable(joined):
                        yield BadRow(row_no, f"{_NOT_VALID} {label}", consumed)
                    else:
                        yield Record(row_no, dict(zip(columns, row, strict=True)), consumed)
            finally:
                if text is not None:
                    text.detach()  # the `with` closes the file

    def _jsonl_rows(self, offset: int, first_row: int) -> Generator[RowItem, None, None]:
        columns = self.columns
        known = set(columns)
        codec, label = self._fmt.codec, self._label()
        with open(self.path, "rb") as f:
            f.seek(offset or self._fmt.bom)
            consumed = offset or self._fmt.bom
            row_no = first_row
            for raw in f:
                consumed += len(raw)
                if not raw.strip():
                    continue
                row_no += 1
                try:
                    obj = json.loads(raw.decode(codec))
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
                if _blank(values.values()):
                    yield EmptyRow(row_no, consumed)
                    continue
                problem = _bad_text(values.values(), label)
                if problem:
                    yield BadRow(row_no, problem, consumed)
                    continue
                yield Record(row_no, values, consumed)

    def _xlsx_rows(self, source: Iterator[tuple[list[str], int]], *,
                   header_seen: bool = False) -> Generator[RowItem, None, None]:
        columns = self.columns
        width = len(columns)
        label = self._label()
        row_no = 0 if header_seen else -1  # rows before the header (the first row with a value) are not counted
        for values, missing in source:
            while values and values[-1] == "":
                values.pop()
            if row_no < 0:
                if values:
                    row_no = 0  # the header
                continue
            row_no += 1
            if 0 <= missing < width:
                yield BadRow(row_no, f"column {columns[missing]!r} {_FORMULA} (the file was saved by a program "
                                     "that does not calculate formulas)")
            elif _blank(values):
                yield EmptyRow(row_no)
            elif len(values) > width:
                yield BadRow(row_no, f"{_RAGGED}: {len(values)} cells, the header has {width}")
            else:
                values += [""] * (width - len(values))
                problem = _bad_text(values, label)
                if problem:
                    yield BadRow(row_no, problem)
                else:
                    yield Record(row_no, dict(zip(columns, values, strict=True)))


def _blank(values: Iterable[str]) -> bool:
    text = "".join(values)
    return not text or text.isspace()


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_text(values: Iterable[str], label: str = "UTF-8") -> str | None:
    text = "".join(values)
    if "\x00" in text:
        return "the row contains a NUL character"
    if not text.isascii() and not _encodable(text):  # (the common all-ASCII row skips the encode)
        return f"{_NOT_VALID} {label}"
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
