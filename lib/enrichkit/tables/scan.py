"""One walk over the input: each record once, in file order, with its ID, and the rows that are not records.

`PendingScan` walks any `Table` and yields the records still to do (`Pending`: the record, its ID, where it
starts; skipping IDs already done, from a resume `Position`), counts what it passed (`ScanCounts`: records,
duplicates, unreadable and empty rows) and says whether those counts are the whole input's. The pipeline
walks it, `precount` and `--dry-run` count with it, and the jobs tool's `validate`, `missing` and `export`
(`jobs/audit.py`) read the input through it; this is the only place that decides what a duplicate, an
unreadable row or an empty row is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from enrichkit.store.idset import IdSet
from enrichkit.tables.records import BadRow, EmptyRow, Record, RecordIds, Table

Position = tuple[int, int]  # (byte offset just after a row, its row number); (0, 0) is the top of the file


@dataclass
class ScanCounts:
    records: int = 0  # distinct records met
    duplicates: int = 0  # rows whose ID an earlier row had
    unreadable: int = 0  # rows that are no record (ragged, undecodable, NUL, ...)
    empty: int = 0  # rows with no value at all (Excel's trailing ",,,")


@dataclass(frozen=True, slots=True)
class Pending:
    """A record the walk hands out: where it starts in the input (for `resume_at`) and its ID."""

    record: Record
    record_id: str
    start: Position


class PendingScan:
    """Walk `table` once and yield the records wanted, each ID once.

    - `done(id)`: records passed over without being counted as seen (a resume that does not need the
      counts skips the completed IDs cheaply); ignored when `count_input` is set;
    - `wanted(id)`: of the rest, which to yield (a new job: all; `--retry-failed`: the failed ones);
    - `limit`: yield at most this many; with `count_input`, the walk then reads on to the end, counting;
    - `count_input`: the walk counts the input (`counts`): done IDs are counted as seen, not skipped;
    - `start`: a `Position` to begin at (the rows before it are not read, and not counted; where a run's walk
      starts, and whether it counts, is `enrichkit.store.resumemark`'s to decide);
    - `on_unreadable(row)`: called for each unreadable row (to log it).

    `position` is the end of the last row handed out or passed over before the limit; `counts` are
    exact after a whole walk from the top (`complete`).
    """

    def __init__(self, table: Table, id_columns: list[str], *, done: Callable[[str], bool] | None = None,
                 wanted: Callable[[str], bool] | None = None, limit: int | None = None, count_input: bool = True,
                 start: Position | None = None, on_unreadable: Callable[[BadRow], None] | None = None) -> None:
        self.table = table
        self.counts = ScanCounts()
        self.position: Position = start or (0, 0)
        self.started_at: Position = self.position
        self.limit_hit = False
        self.exhausted = False  # the walk reached the end of the input
        self._ids = RecordIds(id_columns)
        self._done = done
        self._wanted = wanted
        self._limit = limit
        self._count_input = count_input
        self._on_unreadable = on_unreadable

    @property
    def complete(self) -> bool:
        """The walk read the whole input from the top, so `counts` are the input's."""
        return self.exhausted and self.started_at == (0, 0) and self._count_input

    def __iter__(self) -> Iterator[Pending]:
        counts, ids, done, wanted = self.counts, self._ids, self._done, self._wanted
        seen = IdSet()
        taken = 0
        first_bad: BadRow | None = None
        start = self.started_at
        for item in self.table.rows(start if start != (0, 0) else None):
            here = (item.end, item.row)
            if not isinstance(item, Record):
                if isinstance(item, EmptyRow):
                    counts.empty += 1
                else:
                    counts.unreadable += 1
                    first_bad = first_bad or item
                    if self._on_unreadable is not None:
                        self._on_unreadable(item)
                self._advance(here)
                continue
            record_id = ids(item.values)
            if done is not None and not self._count_input and done(record_id):
                self._advance(here)
                continue
            if record_id in seen:
                counts.duplicates += 1
                self._advance(here)
                continue
            seen.add(record_id)
            counts.records += 1
            if self.limit_hit or (done is not None and done(record_id)) or (wanted is not None
                                                                              and not wanted(record_id)):
                self._advance(here)
                continue
            if self._limit is not None and taken >= self._limit:
                self.limit_hit = True
                if not self._count_input:
                    return
                continue
            taken += 1
            pending = Pending(item, record_id, self.position)
            self._advance(here)
            yield pending
        self.exhausted = True
        readable = counts.records + counts.duplicates
        if self.complete and counts.unreadable > readable:
            # A file read with the wrong encoding or delimiter: most rows are noise, whatever was sent.
            raise self.table.unreadable_error(counts.unreadable, counts.unreadable + readable, first_bad)

    def _advance(self, here: Position) -> None:
        # Past --limit the walk only counts: the rows it reads then are not done.
        if not self.limit_hit:
            self.position = here
