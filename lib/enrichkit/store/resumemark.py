"""The resume mark (the checkpoint's `resume_at`): where a resume starts reading the input. Decided here only.

A mark is an input position: the byte offset just after a row and that row's number. Every record before it was
finished when it was recorded, so a resume that trusts it reads only what follows; no mark (None) is the top.

    what a walk reads   a job whose input counts are not known (a new job, a changed input, a counting walk stopped
                        before the end: `must_count`) counts the input from the top; a resume starts at the mark;
                        --retry-failed walks from the top for the failed records only (`walk`);
    where the mark is   before the first record handed out and not yet finished, else after the last row the walk
                        read (`at`);
    when it moves       at every checkpoint, except in --retry-failed (it walks for failed records, not pending ones:
                        the mark it found stands) and while the output cannot take rows (records handed to it may be
                        lost: the mark stays where the output was last whole) (`moves`);
    from the top        a walk that began at the mark reached the end with every record back, yet the job's count
                        says records are missing: they are before the mark (an input re-sorted with its size and
                        mtime kept, rows lost to a failed write). The run walks again from the top, counting
                        (`walk_again`); until a walk from the top is whole there is no mark, so a run that ends
                        first leaves the next one reading from the top (`walk_ended`);
    at open             a changed input (offsets into the old file mean nothing) or an output read whole because it
                        lost rows the checkpoint claimed, or because the checkpoint's lists were not trusted, drops
                        the recorded mark (`kept_at_open`).

Pure: modes, positions and counts in, decisions out. The pipeline and the batch sweep ask it; the store records it.
"""

from __future__ import annotations

from dataclasses import dataclass

from enrichkit.config.plan import JobMode
from enrichkit.tables.scan import Position

TOP: Position = (0, 0)


@dataclass(frozen=True)
class Walk:
    """How a walk over the input goes: where it starts (None: the top), and whether it counts the input."""

    start: Position | None
    count_input: bool


class ResumeMark:
    """One run's resume mark: what the checkpoint recorded, the records handed out and not yet finished, and
    whether records are missing before the mark."""

    def __init__(self, mode: JobMode, recorded: dict[str, int] | None, *, counts_known: bool) -> None:
        self.mode = mode
        # The input's counts are not known: this run's first walk must count them, from the top.
        self.must_count = mode == JobMode.NEW or not counts_known
        self._recorded: Position | None = (int(recorded["offset"]), int(recorded["row"])) if recorded else None
        self._walk_start = TOP
        self._open: dict[str, Position] = {}  # records handed out and not yet finished -> where they start
        self._from_top = False  # records are missing before the mark: until a whole walk from the top, no mark

    @staticmethod
    def kept_at_open(*, input_changed: bool, rows_lost: bool, lists_trusted: bool) -> bool:
        """Does the checkpoint's mark survive the start (the input compared, the output read back)?"""
        return not input_changed and not rows_lost and lists_trusted

    def walk(self) -> Walk:
        """The run's first walk."""
        start = self._recorded if self.mode == JobMode.RESUME and not self.must_count else None
        self._walk_start = start or TOP
        return Walk(start, self.must_count)

    def opened(self, record_id: str, start: Position) -> None:
        """A record handed out: the mark stays before it until it is finished."""
        self._open[record_id] = start

    def closed(self, record_id: str) -> None:
        """A record written or failed (an abandoned one stays open: it is pending)."""
        self._open.pop(record_id, None)

    def moves(self, *, output_whole: bool) -> bool:
        """Is the mark recorded at this checkpoint (else the recorded one stands)?"""
        return self.mode != JobMode.RETRY_FAILED and output_whole

    def at(self, read_to: Position | None) -> dict[str, int] | None:
        """The mark now, the walk having read to `read_to` (None: no walk, or none yet)."""
        if self._from_top:
            return None
        position = min(self._open.values()) if self._open else read_to
        if position is None or not position[0]:
            return None
        return {"offset": position[0], "row": position[1]}

    def walk_again(self, *, cut_short: bool, missing: bool) -> Walk | None:
        """At the end of a walk with everything handed out back: a walk from the top, counting, when the walk began
        at the mark and the job's count says records are `missing` (unless the walk was `cut_short`: a stop, a fatal
        error, --limit)."""
        if self._walk_start == TOP or self.mode == JobMode.RETRY_FAILED or cut_short or not missing:
            return None
        self._from_top = True  # a crash meanwhile: the next run reads from the top too
        self._walk_start = TOP
        return Walk(None, True)

    def walk_ended(self, *, whole: bool, reached_end: bool, missing: bool) -> None:
        """How the run's last walk ended: `whole` (the input read from the top, counted), or `reached_end` of the
        input (not stopped, not at --limit) with records still `missing`."""
        if whole:
            self._from_top = False  # the whole input was read: nothing is missing before any mark
        elif reached_end and missing and self._walk_start != TOP:
            self._from_top = True  # they must be before the mark: the next run reads the input from the top
