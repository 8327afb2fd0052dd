"""The XLSX reader: the first sheet of a workbook (read by `workbooks.py` through openpyxl in read-only mode),
its first row with a value the header; a formula with no computed value makes a bad row. Rows have no byte
offsets: a resumed read starts from the top."""

from __future__ import annotations

from collections.abc import Generator, Iterator

from enrichkit.errors import InputError
from enrichkit.tables import workbooks
from enrichkit.tables.records import RAGGED, BadRow, EmptyRow, Record, RowItem, TableBase, bad_text, blank, stringify

_FORMULA = "is a formula with no computed value"


class XlsxTable(TableBase):
    """An .xlsx workbook; `encoding` and `delimiter` do not apply (None)."""

    def _open(self, shown: str, encoding: str | None, delimiter: str | None) -> None:
        for flag, value in (("--encoding", encoding), ("--delimiter", delimiter)):
            if value is not None:
                raise InputError(f"{flag} does not apply to .xlsx input", shown)
        source = workbooks.sheet_values(self.path, True, stringify)  # the header and the sample from one pass
        try:
            self.columns = self._read_header(values for values, _ in source if any(values))
            self._check_sample(self._rows(source, header_seen=True))
        finally:
            source.close()

    def rows(self, start: tuple[int, int] | None = None) -> Iterator[RowItem]:
        yield from self._rows(workbooks.sheet_values(self.path, None, stringify))

    def estimate_rows(self) -> int:
        """Data rows as the sheet's dimension says."""
        return workbooks.data_rows(self.path)

    def describe_format(self) -> str:
        n = len(self.columns)
        return f"xlsx (first sheet), {n} column{'s' * (n != 1)}"

    def _hint(self, message: str) -> str:
        if _FORMULA in message:
            return "open and save the workbook in Excel or LibreOffice so its formulas get values"
        return "check the first sheet's header row and cells"

    def _rows(self, source: Iterator[tuple[list[str], int]], *,
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
            elif blank(values):
                yield EmptyRow(row_no)
            elif len(values) > width:
                yield BadRow(row_no, f"{RAGGED}: {len(values)} cells, the header has {width}")
            else:
                values += [""] * (width - len(values))
                problem = bad_text(values, label)
                if problem:
                    yield BadRow(row_no, problem)
                else:
                    yield Record(row_no, dict(zip(columns, values, strict=True)))
