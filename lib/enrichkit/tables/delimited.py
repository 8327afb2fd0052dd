"""The CSV/TSV reader: rows parsed by the csv module from binary lines decoded one by one, so each row's end
is a byte offset (for resume); a one-column header that holds another separator is a wrong delimiter."""

from __future__ import annotations

import csv
import io
from collections.abc import Generator, Iterable, Iterator

from enrichkit.errors import InputError
from enrichkit.tables.records import NOT_VALID, RAGGED, BadRow, EmptyRow, Record, RowItem, encodable
from enrichkit.tables.sniffing import SEPARATORS, TextFormat, delimiter_name, sniff_separator, split_lines
from enrichkit.tables.text import TextTable

_UNREADABLE_CSV = "unreadable CSV row"


class CsvTable(TextTable):
    """A .csv file: ',' unless ';' or tab is seen more often in the header line (or --delimiter says)."""

    separators = (",", ";", "\t")  # sniffed in this order of preference

    def describe_format(self) -> str:
        n = len(self.columns)
        ends = ", CR line ends" if self._fmt.newline == b"\r" else ""
        return f"{self.encoding}, {delimiter_name(self.delimiter or ',')} separated{ends}, {n} column{'s' * (n != 1)}"

    def _hint(self, message: str) -> str:
        if NOT_VALID in message:
            return "give the file's encoding with --encoding (cp1252 for most files from Windows Excel)"
        if message.startswith((RAGGED, _UNREADABLE_CSV)):
            return "give the separator with --delimiter (',' ';' tab '|') and check --encoding"
        return "check --encoding and --delimiter"

    def _open(self, shown: str, encoding: str | None, delimiter: str | None) -> None:
        self._open_text(shown, encoding, delimiter)
        self._check_one_column_header(given=delimiter is not None)
        self._check_sample(self._rows(0, 0))

    def _text_format(self, fmt: TextFormat, head: bytes, delimiter: str | None, shown: str) -> TextFormat:
        return sniff_separator(fmt, head, delimiter, self.separators)

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

    def _raw_header(self) -> Iterator[list[str]]:
        fmt = self._fmt
        with open(self.path, "rb") as f:
            f.seek(fmt.bom)
            text = io.TextIOWrapper(f, encoding=fmt.codec, errors=fmt.errors, newline="")
            try:
                yield from (row for row in csv.reader(text, delimiter=self.delimiter or ",") if row)
            finally:
                text.detach()  # the `with` closes the file

    def _rows(self, offset: int, first_row: int) -> Generator[RowItem, None, None]:
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
                        yield BadRow(row_no, f"{RAGGED}: {len(row)} fields, the header has {width}", consumed)
                    elif "\x00" in joined:
                        yield BadRow(row_no, "the row contains a NUL character", consumed)
                    elif not joined.isascii() and not encodable(joined):
                        yield BadRow(row_no, f"{NOT_VALID} {label}", consumed)
                    else:
                        yield Record(row_no, dict(zip(columns, row, strict=True)), consumed)
            finally:
                if text is not None:
                    text.detach()  # the `with` closes the file


class TsvTable(CsvTable):
    """A .tsv file: tab unless ',' or ';' is seen more often in the header line (or --delimiter says)."""

    separators = ("\t", ",", ";")
