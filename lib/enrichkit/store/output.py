"""The output CSV as it is written: its columns, one row per finished record, appended as records finish
(reading it back is `enrichkit.store.readback`).

Rows are valid, correctly quoted UTF-8 whatever a value holds: a bare CR is quoted like a newline,
a value that cannot be encoded (a lone surrogate from a python stage) is replaced, and values a
spreadsheet would run as a formula are neutralised. The writer keeps a running CRC-32 of every byte
it wrote, so a resume can prove that the rows the checkpoint counts are still exactly there.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

ID_COLUMN = "_record_id"
JOB_COLUMN = "_job_id"
COST_COLUMN = "_cost_usd"
BOM = b"\xef\xbb\xbf"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
RECORD_ID = re.compile(r"^[0-9a-f]{16}$")


def output_columns(input_columns: Sequence[str], fields: Sequence[str]) -> list[str]:
    """Input columns in input order, the stages' fields, then `_cost_usd`, `_record_id`, `_job_id`. A field that
    is also an input column (a stage that fills the input's gaps: `skip_if_filled`) is that column, in place."""
    given = set(input_columns)
    return [*input_columns, *(f for f in fields if f not in given), COST_COLUMN, ID_COLUMN, JOB_COLUMN]


def neutralise(value: str) -> str:
    """Prefix `'` to a value a spreadsheet would run as a formula; plain numbers such as -3.5 stay."""
    if value.startswith(_FORMULA_START) and not _NUMBER.match(value):
        return "'" + value
    return value


def encodable(value: str) -> str | None:
    """`value` as valid UTF-8 text, or None when it already is (the common case costs one check)."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return None


class OutputWriter:
    """Appends one row per finished record; used from one thread. `write` buffers, `flush` hands the rows
    to the kernel, `sync` makes them durable. `crc32` and `size` cover every byte written so far."""

    def __init__(self, path: str | Path, columns: Sequence[str], enriched: Sequence[str], job_id: str, *,
                 on_replaced: Callable[[str, str], None] = lambda column, record_id: None, bom: bool = False) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self._value_columns = self.columns[:-3]
        self._enriched = set(enriched)
        self._job_id = job_id
        self._on_replaced = on_replaced
        existed = self.path.exists() and self.path.stat().st_size > 0
        self._file: IO[bytes] = open(self.path, "ab")  # noqa: SIM115 - lives as long as the run
        self.size = os.fstat(self._file.fileno()).st_size
        self.crc32 = 0
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\n")
        # QUOTE_MINIMAL quotes a field holding a character of the line terminator: with "\r\n" that includes
        # a bare CR, which a "\n" writer would leave unquoted (and a reader would split the row there).
        self._csv_cr = csv.writer(self._buf, lineterminator="\r\n")
        if not existed:
            self._emit(self.columns, BOM if bom else b"")  # --excel: Excel reads a CSV as UTF-8 only after a BOM

    def resume_crc(self, crc32: int) -> None:
        """The CRC of the bytes already in the file (verified by the store), so the running CRC covers them."""
        self.crc32 = crc32

    def write(self, values: dict[str, str], record_id: str, cost: str = "") -> None:
        get = values.get
        row = [neutralise(get(c, "")) if c in self._enriched else get(c, "") for c in self._value_columns]
        for i, value in enumerate(row):
            fixed = encodable(value)
            if fixed is not None:
                row[i] = fixed
                self._on_replaced(self._value_columns[i], record_id)
        row += [cost, record_id, self._job_id]
        self._emit(row)

    def _emit(self, row: list[str], prefix: bytes = b"") -> None:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        if any("\r" in value for value in row):
            self._csv_cr.writerow(row)
            text = buf.getvalue()[:-2] + "\n"
        else:
            self._csv.writerow(row)
            text = buf.getvalue()
        data = prefix + text.encode("utf-8")
        self._file.write(data)
        self.size += len(data)
        self.crc32 = zlib.crc32(data, self.crc32)

    def flush(self) -> None:
        self._file.flush()

    def identity(self) -> tuple[int, int]:
        """(device, inode) of the open file: compared with the path's to notice a file replaced under the run."""
        st = os.fstat(self._file.fileno())
        return st.st_dev, st.st_ino

    def sync(self) -> None:
        """flush + fsync: done before every checkpoint write, so the checkpoint never claims rows a reboot
        could lose."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            try:
                self.sync()
            finally:
                self._file.close()

    def abandon(self) -> None:
        """Close after a failed write or a replaced file: a last flush may fail again, the file is closed anyway
        (a torn row it leaves is cut by the next run's read-back)."""
        try:
            self._file.close()
        except OSError:
            pass
