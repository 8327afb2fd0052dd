"""Counting a small input exactly before a job's first run, so its start line says how many records there are
to do ("19997 records to do", not "~20103", an estimate from line ends that multi-line cells and duplicate rows
put off). A large input is not walked twice: its count stays an estimate until the first whole pass."""

from __future__ import annotations

from enrichkit.tables.records import Table
from enrichkit.tables.scan import PendingScan, ScanCounts

# About 2 s of walking at worst on a slow machine (text: ~40,000 rows; a workbook is slower to read).
EXACT_BYTES = {".xlsx": 1 << 20}
DEFAULT_EXACT_BYTES = 5 << 20


def count_small_input(table: Table, id_columns: list[str]) -> ScanCounts | None:
    """The records, duplicates, unreadable and empty rows of a small input, from a whole walk; None when the
    input is too large to walk twice."""
    try:
        size = table.path.stat().st_size
    except OSError:
        return None
    if size > EXACT_BYTES.get(table.path.suffix.lower(), DEFAULT_EXACT_BYTES):
        return None
    walk = PendingScan(table, id_columns)
    for _ in walk:
        pass
    return walk.counts
