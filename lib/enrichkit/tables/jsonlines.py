"""The JSONL reader: one JSON object a line, its keys those of the first object, values made cells by
`stringify`; each row's end is a byte offset (for resume). Only encodings whose line ends are single bytes."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator

from enrichkit.errors import InputError
from enrichkit.tables.records import BadRow, EmptyRow, Record, RowItem, bad_text, blank, stringify
from enrichkit.tables.sniffing import TextFormat
from enrichkit.tables.text import TextTable


class JsonLinesTable(TextTable):
    """A .jsonl file: the first object's keys are the columns; another key in a later line makes it a bad row."""

    header_lines = 0

    def describe_format(self) -> str:
        n = len(self.columns)
        return f"{self.encoding} JSON lines, {n} key{'s' * (n != 1)}"

    def _hint(self, message: str) -> str:
        return "each line must be one JSON object; check --encoding"

    def _open(self, shown: str, encoding: str | None, delimiter: str | None) -> None:
        self._open_text(shown, encoding, delimiter)
        self._check_sample(self._rows(0, 0))

    def _text_format(self, fmt: TextFormat, head: bytes, delimiter: str | None, shown: str) -> TextFormat:
        if delimiter is not None:
            raise InputError("--delimiter applies to .csv and .tsv input, not .jsonl", shown)
        if not fmt.seekable:
            raise InputError(f"JSON lines cannot be read as {fmt.encoding}; re-save the file as UTF-8", shown)
        return fmt

    def _raw_header(self) -> Iterator[list[str]]:
        fmt = self._fmt
        with open(self.path, "rb") as f:
            f.seek(fmt.bom)
            for raw in f:
                if raw.strip():
                    obj = json.loads(raw.decode(fmt.codec))
                    if not isinstance(obj, dict):
                        raise ValueError("the first line is not a JSON object")
                    yield list(obj)

    def _rows(self, offset: int, first_row: int) -> Generator[RowItem, None, None]:
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
                if blank(values.values()):
                    yield EmptyRow(row_no, consumed)
                    continue
                problem = bad_text(values.values(), label)
                if problem:
                    yield BadRow(row_no, problem, consumed)
                    continue
                yield Record(row_no, values, consumed)
