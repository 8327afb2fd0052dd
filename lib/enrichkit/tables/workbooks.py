"""The first sheet of an XLSX workbook, streamed with openpyxl in read-only mode (imported only for XLSX), for
the XLSX reader (`xlsx.py`): each row's cells as strings, which of them are formulas with no computed value,
and the row count the sheet's dimension gives."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

_FORMULA_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?f[\s/>]")


def open_workbook(path: Path, *, data_only: bool) -> Any:
    """A read-only workbook; ValueError if the file is not one."""
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=data_only)
    except (InvalidFileException, zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise ValueError(f"not a readable XLSX workbook ({exc.__class__.__name__})") from None


def sheet_values(path: Path, formulas: bool | None,
                 stringify: Callable[[object], str]) -> Generator[tuple[list[str], int], None, None]:
    """Each row of the first sheet as strings, with the position of its first formula cell that has no
    computed value (-1: none). openpyxl's data_only pass shows such a cell as empty, so a second pass
    without data_only, read in step with the first, tells which empty cells are formulas; it is skipped
    when the sheet has none (`formulas` None: look first). Constant memory either way."""
    wb = open_workbook(path, data_only=True)
    fwb = None
    try:
        if not wb.worksheets:
            return
        if formulas is None:
            formulas = _sheet_has_formulas(wb)
        if not formulas:
            for cells in wb.worksheets[0].iter_rows(values_only=True):
                yield [stringify(v) for v in cells], -1
            return
        fwb = open_workbook(path, data_only=False)
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


def data_rows(path: Path) -> int:
    """Rows below the header as the sheet's dimension says (an estimate, for the first progress bar)."""
    wb = open_workbook(path, data_only=True)
    try:
        return max(0, (wb.worksheets[0].max_row or 1) - 1) if wb.worksheets else 0
    finally:
        wb.close()


def _sheet_has_formulas(wb: Any) -> bool:
    """Whether the first sheet's XML holds a formula (<f>), read at zlib speed from openpyxl's open archive
    (private names: when they are missing, assume it does)."""
    archive = getattr(wb, "_archive", None)
    part = getattr(wb.worksheets[0], "_worksheet_path", None)
    if not isinstance(archive, zipfile.ZipFile) or not isinstance(part, str):
        return True
    tail = b""
    with archive.open(part) as src:
        while chunk := src.read(1 << 20):
            if _FORMULA_TAG.search(tail + chunk):
                return True
            tail = chunk[-64:]
    return False
