"""Input tables streamed as records, and record IDs: the `Table` protocol and what every reader shares.

A record is one input row as an ordered mapping column -> string. Rows that cannot be read
come out as `BadRow` (an input error for that row, never a crash), rows with no value at all as
`EmptyRow`; a file that cannot be read at all raises `InputError` before anything is sent anywhere.

`InputTable(path)` opens a file with the reader for its suffix and gives it as a `Table` (what callers may
use): `delimited.py` (CSV/TSV), `jsonlines.py` (JSONL), `xlsx.py` (the first sheet of a workbook); `text.py`
holds what the two text readers share (the sniffed format, byte offsets for resume). This module holds what
every reader shares (`TableBase`: the checks on opening, of the path, the header and a bounded sample; the
whole-file error), the row items, the value checks, `stringify` and record IDs.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import operator
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from enrichkit.errors import InputError
from enrichkit.tables.sniffing import DELIMITERS, SAMPLE_BYTES

# Separator for the hashed ID columns: NUL cannot occur in a value (a row holding one is an input error).
_ID_SEPARATOR = "\x00"
SAMPLE_ROWS = 1_000  # opening a table reads at most this many rows (and SAMPLE_BYTES) to judge the whole file
__all__ = ["DELIMITERS", "BadRow", "EmptyRow", "InputTable", "Record", "RecordIds", "RowItem", "Table",
           "make_record_id", "stringify"]
NOT_VALID = "the row contains bytes that are not valid"
RAGGED = "ragged row"

# A CSV field may legitimately be large (a scraped page); the default 128 KiB cap would turn it into an input
# error. Set on import of this module, for every CSV the process reads (the outputs read back too).
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


class Table(Protocol):
    """What an opened input table offers its callers, whatever its format."""

    path: Path
    size: int  # bytes, and the modification time, when opened (a later change means the input changed)
    mtime: float
    encoding: str | None  # in force, given or sniffed (None where it does not apply)
    delimiter: str | None
    columns: list[str]  # the header, checked: stripped, none empty, none twice

    def rows(self, start: tuple[int, int] | None = None) -> Iterator[RowItem]: ...
    def estimate_rows(self) -> int: ...
    def describe_format(self) -> str: ...
    def unreadable_error(self, bad: int, rows: int, example: BadRow | None = None, *,
                         sample: bool = False) -> InputError: ...
    def require_columns(self, names: Sequence[str], what: str) -> None: ...


class TableBase(ABC):
    """What every reader shares: the opening checks (path, header, the bounded sample), `require_columns` and
    the whole-file error. A reader provides `_open` (sniff, read the header, check the sample), `rows`,
    `estimate_rows`, `describe_format` and `_hint`.
    """

    encoding: str | None = None
    delimiter: str | None = None
    columns: list[str]

    def __init__(self, path: str | os.PathLike[str], *, encoding: str | None = None,
                 delimiter: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError("no such file", str(path))
        if not self.path.is_file():
            raise InputError("not a file", str(path))
        stat = self.path.stat()
        self.size = stat.st_size
        self.mtime = stat.st_mtime
        if self.size == 0:
            raise InputError("the file is empty (expected a header row)", str(path))
        self._open(str(path), encoding, delimiter)

    @abstractmethod
    def _open(self, shown: str, encoding: str | None, delimiter: str | None) -> None:
        """Sniff the format, set `encoding`, `delimiter` and `columns` (`_read_header`), `_check_sample`.
        `shown`: the path as the caller wrote it, for the messages of the format's checks."""

    @abstractmethod
    def rows(self, start: tuple[int, int] | None = None) -> Iterator[RowItem]:
        """Every data row in file order, as `Record`, `BadRow` or `EmptyRow`; constant memory.

        `start` = (byte offset, row number) of a row's end, as an item's `end` and `row` gave it: the
        rows after it, without reading those before. Where offsets are not known (XLSX, UTF-16: `end`
        is 0) the rows come from the top.
        """

    @abstractmethod
    def estimate_rows(self) -> int:
        """Data rows, estimated fast, for the first progress bar."""

    @abstractmethod
    def describe_format(self) -> str:
        """What the file was read as, for messages: "utf-8, ',' separated, 5 columns"."""

    @abstractmethod
    def _hint(self, message: str) -> str:
        """What to do about unreadable rows, the first of which says `message`."""

    def unreadable_error(self, bad: int, rows: int, example: BadRow | None = None, *,
                         sample: bool = False) -> InputError:
        """The whole-file error for `bad` unreadable rows among `rows` non-empty ones (the caller's too,
        when a full pass ends with no record): what was seen and which flag to use."""
        scope = f"the first {rows}" if sample else str(rows)
        seen = f" (row {example.row}: {example.message})" if example else ""
        hint = self._hint(example.message if example else "")
        return InputError(f"{bad} of {scope} rows cannot be read as {self.describe_format()}{seen}; {hint}",
                          str(self.path))

    def require_columns(self, names: Sequence[str], what: str) -> None:
        """Fail (exit 2) if any of `names` is not a column of this file."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise InputError(
                f"{what} {', '.join(repr(m) for m in missing)} not in the header "
                f"(columns: {', '.join(self.columns)})", str(self.path))

    def _label(self) -> str:
        """The encoding as a row's message names it."""
        return "UTF-8"

    def _read_header(self, raw: Iterator[list[str]]) -> list[str]:
        """The first of `raw`'s rows as the columns, checked."""
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
        if bad_text(header, self._label()):
            raise InputError(f"the header has bytes that are not valid {self._label()}; give the file's encoding "
                             "with --encoding (cp1252 for most files from Windows Excel)", str(self.path))
        seen: set[str] = set()
        dupes = sorted({h for h in header if h in seen or seen.add(h)})  # type: ignore[func-returns-value]
        if dupes:
            raise InputError(f"duplicate column names in the header: {', '.join(dupes)}", str(self.path))
        return header

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


def InputTable(path: str | os.PathLike[str], *, encoding: str | None = None,  # (named as the class it was)
               delimiter: str | None = None) -> Table:
    """The input file at `path`, opened by the reader for its suffix: its format and header checked, a bounded
    sample read; `InputError` if the file as a whole cannot be right. `encoding` and `delimiter` are the ones
    in force, given or sniffed (None where they do not apply); `rows()` streams it from the start each call."""
    # The readers build on this module, so they are imported here, when a table is opened.
    from enrichkit.tables.delimited import CsvTable, TsvTable
    from enrichkit.tables.jsonlines import JsonLinesTable
    from enrichkit.tables.xlsx import XlsxTable

    kind = Path(path).suffix.lower()
    readers: dict[str, type[TableBase]] = {".csv": CsvTable, ".tsv": TsvTable, ".jsonl": JsonLinesTable,
                                           ".xlsx": XlsxTable}
    if kind not in readers:
        raise InputError(f"unsupported input type {kind or '(none)'}; use .csv, .tsv, .jsonl or .xlsx "
                         "(a tab-separated .txt from Excel: rename it .tsv)", str(path))
    return readers[kind](path, encoding=encoding, delimiter=delimiter)


def blank(values: Iterable[str]) -> bool:
    """No value at all: only empty or white-space cells."""
    text = "".join(values)
    return not text or text.isspace()


def encodable(text: str) -> bool:
    """Holds no lone surrogate (what undecodable bytes become), so it can be written as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def bad_text(values: Iterable[str], label: str = "UTF-8") -> str | None:
    """Why cells cannot be a record's values (a NUL, bytes not valid in `label`), or None."""
    text = "".join(values)
    if "\x00" in text:
        return "the row contains a NUL character"
    if not text.isascii() and not encodable(text):  # (the common all-ASCII row skips the encode)
        return f"{NOT_VALID} {label}"
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
