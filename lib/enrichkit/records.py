"""Input tables (CSV/TSV, JSONL, XLSX) streamed as records, and record IDs.

A record is one input row as an ordered mapping column -> string. Rows that cannot be read
come out as `BadRow` (an input error for that row, never a crash), rows with no value at all as
`EmptyRow`; a file that cannot be read at all raises `InputError` before anything is sent anywhere.
Encoding (BOM), delimiter and line ends are sniffed unless given.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import io
import json
import operator
import os
import re
import sys
import zipfile
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from enrichkit.errors import InputError

# Separator for the hashed ID columns: NUL cannot occur in a value (a row holding one is an input error).
_ID_SEPARATOR = "\x00"
SUPPORTED = (".csv", ".tsv", ".jsonl", ".xlsx")
DELIMITERS = {",": ",", ";": ";", "\t": "\t", "\\t": "\t", "tab": "\t", "|": "|"}  # what --delimiter accepts
SAMPLE_ROWS = 1_000  # opening a table reads this much to judge the whole file
SAMPLE_BYTES = 1 << 20
# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_NOT_VALID = "the row contains bytes that are not valid"
_FORMULA = "is a formula with no computed value"
_RAGGED = "ragged row"
_UNREADABLE_CSV = "unreadable CSV row"

# A CSV field may legitimately be large (a scraped page); the default 128 KiB cap would turn it into an input error.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def _mark_unreadable(exc: UnicodeError) -> tuple[str, int]:
    # Bytes a codec cannot decode become a lone surrogate, which the row check reports (surrogateescape
    # cannot stand in: it refuses bytes below 0x80, which a UTF-16 or multi-byte codec may reject).
    if isinstance(exc, UnicodeDecodeError):
        return "\udcff", exc.end
    raise exc


codecs.register_error("enrichkit.unreadable", _mark_unreadable)


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
        self.encoding: str | None = None
        self.delimiter: str | None = None
        self._codec, self._errors, self._bom, self._newline = "utf-8", "surrogateescape", 0, b"\n"
        self._seekable = self.kind != ".xlsx"  # rows(start) can seek: byte offsets are known
        self._formulas: bool | None = None  # whether the XLSX sheet holds formulas (known after the first rows())
        self._unquoted = dict.fromkeys((",", ";", "\t", "|"), 0)  # separators outside quotes in the header line
        if self.kind == ".xlsx":
            for flag, value in (("--encoding", encoding), ("--delimiter", delimiter)):
                if value is not None:
                    raise InputError(f"{flag} does not apply to .xlsx input", str(path))
        else:
            with open(self.path, "rb") as f:
                head = f.read(SAMPLE_BYTES)
            self._sniff(head, encoding, delimiter)
        if self.kind == ".xlsx":
            source = self._xlsx_values(True)  # the header and the sample from one pass
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
        ends = ", CR line ends" if self._newline == b"\r" else ""
        return f"{self.encoding}, {_delimiter_name(self.delimiter or ',')} separated{ends}, {n} column{'s' * (n != 1)}"

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
        offset, row = start if start and self._seekable else (0, 0)
        if self.kind == ".xlsx":
            yield from self._xlsx_rows(self._xlsx_values(self._formulas))
        elif self.kind == ".jsonl":
            yield from self._jsonl_rows(offset, row)
        else:
            yield from self._csv_rows(offset, row)

    def estimate_rows(self) -> int:
        """Data rows, estimated fast (line ends; a quoted field may hold more), for the first progress bar."""
        if self.kind == ".xlsx":
            wb = _open_workbook(self.path, data_only=True)
            try:
                return max(0, (wb.worksheets[0].max_row or 1) - 1) if wb.worksheets else 0
            finally:
                wb.close()
        lines = 0
        last = self._newline
        with open(self.path, "rb") as f:
            while chunk := f.read(1 << 20):
                lines += chunk.count(self._newline)
                last = chunk[-1:]
        lines += last != self._newline
        return max(0, lines - (self.kind != ".jsonl"))

    # --- sniffing and whole-file checks ------------------------------------------------------------

    def _sniff(self, head: bytes, encoding: str | None, delimiter: str | None) -> None:
        self.encoding, self._codec, self._bom = _resolve_encoding(head, encoding, str(self.path))
        self._seekable = _line_safe(self._codec)
        if self._codec != "utf-8":
            self._errors = "enrichkit.unreadable"
        if self.kind == ".jsonl":
            if delimiter is not None:
                raise InputError("--delimiter applies to .csv and .tsv input, not .jsonl", str(self.path))
            if not self._seekable:
                raise InputError(f"JSON lines cannot be read as {self.encoding}; re-save the file as UTF-8",
                                 str(self.path))
        else:
            text = codecs.getincrementaldecoder(self._codec)("replace").decode(head[self._bom:self._bom + 65536])
            self._unquoted, newline = _scan_header_line(text)
            self._newline = b"\r" if newline == "\r" else b"\n"
            if delimiter is None:
                order = ("\t", ",", ";") if self.kind == ".tsv" else (",", ";", "\t")
                best = max(order, key=self._unquoted.__getitem__)  # a tie goes to the earlier one
                self.delimiter = best if self._unquoted[best] else order[0]
            elif delimiter.lower() in DELIMITERS:
                self.delimiter = DELIMITERS[delimiter.lower()]
            else:
                raise InputError(f"--delimiter must be one of , ; tab |, not {delimiter!r}")
        if encoding is None and not self._bom:
            _refuse_legacy_encoding(head, str(self.path))

    def _check_one_column_header(self, *, given: bool) -> None:
        # A one-column header holding another separator is a wrong delimiter; a given one is trusted where the
        # other separators only occur inside quotes.
        if len(self.columns) != 1:
            return
        for char in (",", ";", "\t", "|"):
            if char != self.delimiter and char in self.columns[0] and (self._unquoted[char] or not given):
                flag = "tab" if char == "\t" else f"'{char}'"
                raise InputError(f"the header is one column {self.columns[0]!r} (read as {self.describe_format()}); "
                                 f"it looks like {_delimiter_name(char)}-separated: use --delimiter {flag}",
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
        with open(self.path, "rb") as f:
            f.seek(self._bom)
            if self.kind == ".jsonl":
                for raw in f:
                    if raw.strip():
                        obj = json.loads(raw.decode(self._codec))
                        if not isinstance(obj, dict):
                            raise ValueError("the first line is not a JSON object")
                        yield list(obj)
                return
            text = io.TextIOWrapper(f, encoding=self._codec, errors=self._errors, newline="")
            try:
                yield from (row for row in csv.reader(text, delimiter=self.delimiter or ",") if row)
            finally:
                text.detach()  # the `with` closes the file

    def _label(self) -> str:
        return "UTF-8" if self._codec == "utf-8" else str(self.encoding)

    # --- per-format readers -------------------------------------------------------------------

    def _csv_rows(self, offset: int, first_row: int) -> Generator[RowItem, None, None]:
        columns = self.columns
        width = len(columns)
        codec, errors, label = self._codec, self._errors, self._label()
        with open(self.path, "rb") as f:
            f.seek(offset or self._bom)
            consumed = offset or self._bom
            text: io.TextIOWrapper | None = None
            if not self._seekable:  # (UTF-16 and the like: \n is not one byte, so no offsets)
                consumed = 0
                text = io.TextIOWrapper(f, encoding=codec, errors=errors, newline="")
                lines: Iterable[str] = text
            else:
                source = f if self._newline == b"\n" else _split_lines(f, self._newline)

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
        codec, label = self._codec, self._label()
        with open(self.path, "rb") as f:
            f.seek(offset or self._bom)
            consumed = offset or self._bom
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

    def _xlsx_values(self, formulas: bool | None) -> Generator[tuple[list[str], int], None, None]:
        """Each row of the first sheet as strings, with the position of its first formula cell that has no
        computed value (-1: none). openpyxl's data_only pass shows such a cell as empty, so a second pass
        without data_only, read in step with the first, tells which empty cells are formulas; it is skipped
        when the sheet has none (`formulas` None: look first)."""
        wb = _open_workbook(self.path, data_only=True)
        fwb = None
        try:
            if not wb.worksheets:
                return
            if formulas is None:
                formulas = self._formulas = _sheet_has_formulas(wb)
            if formulas:
                fwb = _open_workbook(self.path, data_only=False)
            if fwb is None:
                for cells in wb.worksheets[0].iter_rows(values_only=True):
                    yield [stringify(v) for v in cells], -1
                return
            for cells, formulas_row in zip(wb.worksheets[0].iter_rows(), fwb.worksheets[0].iter_rows(values_only=True),
                                           strict=False):
                row = [c.value for c in cells]
                missing = -1
                if None in row:
                    # Empty here but not in the formula pass: a formula. With its text result empty it keeps
                    # t="str"; an uncomputed one has no usable type.
                    missing = next((i for i, (c, f) in enumerate(zip(cells, formulas_row, strict=False))
                                    if c.value is None and f is not None and c.data_type != "str"), -1)
                yield [stringify(v) for v in row], missing
        finally:
            wb.close()
            if fwb is not None:
                fwb.close()

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


def _resolve_encoding(head: bytes, given: str | None, path: str) -> tuple[str, str, int]:
    """(encoding in force, codec for the bytes after the BOM, BOM length). A BOM decides; else the flag; else UTF-8."""
    norm = None
    if given is not None:
        try:
            info = codecs.lookup(given)
        except LookupError:
            raise InputError(f"unknown encoding {given!r} (--encoding); use a Python codec name such as "
                             "utf-8, cp1252 or utf-16") from None
        if not getattr(info, "_is_text_encoding", True):
            raise InputError(f"--encoding {given!r} is not a text encoding; use one such as utf-8, cp1252 or utf-16")
        norm = "utf-8" if info.name == "utf-8-sig" else info.name
    for bom, name in _BOMS:
        if head.startswith(bom):
            codec = "utf-8" if name == "utf-8-sig" else name
            if norm is not None and norm not in (codec, codec[:-3]):  # utf-16 fits utf-16-le
                raise InputError(f"the file starts with a {codec.upper()} byte-order mark but --encoding {given} "
                                 "was given; drop --encoding", path)
            return name, codec, len(bom)
    if norm is not None:
        return norm, norm, 0
    probe = head[:4096]
    even, odd = probe[0::2], probe[1::2]
    for nuls, rest, name in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if len(nuls) >= 2 and nuls.count(0) >= 0.9 * len(nuls) and rest.count(0) <= 0.1 * len(rest):
            raise InputError(f"the file looks like UTF-16 without a byte-order mark; use --encoding {name}", path)
    if head.startswith(b"PK\x03\x04"):
        raise InputError("the file is a zip archive, not text (a workbook? name it .xlsx)", path)
    if len(probe.translate(None, _CONTROL_BYTES)) < 0.9 * len(probe):
        raise InputError("the file looks binary (compressed, or not a table), not text", path)
    return "utf-8", "utf-8", 0


# Bytes no text table holds in quantity (tab, LF, CR and form feed excepted); a few NULs are just bad rows.
_CONTROL_BYTES = bytes([*range(0, 9), 11, *range(14, 32)])


_LEGACY_RUN = re.compile("[\udc80-\udcff]+")
_REAL_UTF8 = re.compile("[\u0080-\ud7ff\ue000-\U0010ffff]")
_WORD_END = frozenset(" \t\r\n,;|\"")


def _refuse_legacy_encoding(head: bytes, path: str) -> None:
    """A sample that is not UTF-8 but reads as words in a Windows code page (accented letters inside words,
    or whole words of high bytes, and no real UTF-8 character anywhere) is a file from an old Excel: stop and
    name the codec. Stray bad bytes in a UTF-8 file stay bad rows."""
    if len(head) == SAMPLE_BYTES:
        head = head[: head.rfind(b"\n") + 1] or head  # a character cut at the sample's end is no error
    try:
        head.decode("utf-8")
        return
    except UnicodeDecodeError:
        pass
    text = head.decode("utf-8", "surrogateescape")
    if _REAL_UTF8.search(text):
        return
    for run in _LEGACY_RUN.finditer(text):
        a, b = run.span()
        latin = _ascii_letter(text[a - 1:a]) or _ascii_letter(text[b:b + 1])
        if not latin and not (b - a >= 3 and all("\udcc0" <= c <= "\udcff" for c in run.group())):
            continue
        codec = "cp1252" if latin else "cp1251"
        while a > 0 and text[a - 1] not in _WORD_END:
            a -= 1
        while b < len(text) and text[b] not in _WORD_END:
            b += 1
        word = text[a:b].encode("utf-8", "surrogateescape")
        line = text.count("\n", 0, a) + 1
        other = "" if latin else " (or another Windows code page)"
        skip = ", or --encoding utf-8 to read it as UTF-8 and skip such rows" if line > 1 else ""
        raise InputError(f"the file is not UTF-8 (line {line}: {word!r} reads as {word.decode(codec, 'replace')!r} "
                         f"in {codec}); it looks like {codec}{other}: use --encoding {codec}{skip}", path)


def _ascii_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _scan_header_line(text: str) -> tuple[dict[str, int], str]:
    """Separators outside quotes in the first non-blank line, and that line's end ("\\r", "\\n" or "")."""
    counts = dict.fromkeys((",", ";", "\t", "|"), 0)
    quoted = False
    line = text.lstrip("\r\n")
    for i, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in counts:
            counts[char] += 1
        elif char in "\r\n":
            return counts, "\r" if char == "\r" and line[i + 1:i + 2] != "\n" else "\n"
    return counts, ""


def _split_lines(f: BinaryIO, newline: bytes) -> Iterator[bytes]:
    """A binary file's lines ending in `newline` (kept): readline only splits on LF, so CR-only files need this."""
    pending: list[bytes] = []
    while chunk := f.read(1 << 16):
        parts = chunk.split(newline)
        pending.append(parts[0])
        if len(parts) == 1:
            continue
        yield b"".join(pending) + newline
        for part in parts[1:-1]:
            yield part + newline
        pending = [parts[-1]]
    if tail := b"".join(pending):
        yield tail


def _line_safe(codec: str) -> bool:
    # Lines can be split on raw bytes (and offsets kept) when line ends and separators are the ASCII bytes.
    try:
        return "\n\r,;\t|\"".encode(codec) == b"\n\r,;\t|\""
    except UnicodeError:
        return False


def _delimiter_name(char: str) -> str:
    return "tab" if char == "\t" else f"'{char}'"


def _sheet_has_formulas(wb: Any) -> bool:
    """Whether the first sheet's XML holds a formula (<f>), read at zlib speed from openpyxl's open archive
    (private names: when they are missing, assume it does)."""
    archive = getattr(wb, "_archive", None)
    part = getattr(wb.worksheets[0], "_worksheet_path", None)
    if not isinstance(archive, zipfile.ZipFile) or not isinstance(part, str):
        return True
    tag = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?f[\s/>]")
    tail = b""
    with archive.open(part) as src:
        while chunk := src.read(1 << 20):
            if tag.search(tail + chunk):
                return True
            tail = chunk[-64:]
    return False


def _open_workbook(path: Path, *, data_only: bool) -> Any:
    import openpyxl  # only needed for XLSX input
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=data_only)
    except (InvalidFileException, zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise ValueError(f"not a readable XLSX workbook ({exc.__class__.__name__})") from None


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
