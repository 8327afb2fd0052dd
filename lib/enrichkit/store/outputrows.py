"""The output as a run appends to it: rows written and flushed, then fsynced and handed to the checkpoint as claimed,
only while the file being written is still the output. After a write failed, or the file was replaced or deleted by
another program, nothing more is written or claimed; `WriteFailures` remembers the first write of any job file that
failed (the one the closing line names)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from enrichkit.errors import WriteFailed
from enrichkit.store.output import OutputWriter


class WriteFailures:
    def __init__(self) -> None:
        self.first: WriteFailed | None = None

    def broke(self, path: Path, exc: OSError) -> WriteFailed:
        """Remember the first write that failed and return it."""
        if self.first is None:
            self.first = WriteFailed(str(path), exc.strerror or str(exc))
        return self.first


class OutputRows:
    def __init__(self, path: Path, failures: WriteFailures) -> None:
        self.path = path
        self.failures = failures
        self.writer: OutputWriter | None = None
        self.failed = False  # the output could not take a write, or was replaced: nothing more is claimed
        self._unsynced: list[str] = []  # rows written but not yet fsynced: not claimed by the checkpoint yet

    def open(self, columns: list[str], fields: list[str], job_id: str, *, bom: bool, claimed_bytes: int, crc32: int,
             on_replaced: Callable[[str, str], None]) -> None:
        """Open the output for appending; its running CRC-32 goes on from `crc32` when it is `claimed_bytes` long."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.writer = OutputWriter(self.path, columns, fields, job_id, on_replaced=on_replaced, bom=bom)
        except OSError as exc:
            raise WriteFailed(str(self.path), exc.strerror or str(exc)) from None
        if self.writer.size == claimed_bytes:
            self.writer.resume_crc(crc32)

    @property
    def unsynced(self) -> int:
        """Rows written since the last claim (not confirmed on disk yet)."""
        return len(self._unsynced)

    @property
    def size(self) -> int:
        assert self.writer is not None
        return self.writer.size

    @property
    def crc32(self) -> int:
        assert self.writer is not None
        return self.writer.crc32

    def write(self, values: dict[str, str], record_id: str, cost: str) -> None:
        """A row, flushed by `flush()` (once per batch of results)."""
        writer = self.writer
        assert writer is not None
        self._write(lambda: writer.write(values, record_id, cost))
        self._unsynced.append(record_id)

    def flush(self) -> None:
        if self.writer is not None:
            self._write(self.writer.flush)

    def claim(self) -> list[str] | None:
        """fsync the output; the IDs of the rows written since the last claim, now on disk (None: no output open,
        or it can no longer be claimed)."""
        if self.writer is None or self.failed:
            return None
        self._check_file()
        self._write(self.writer.sync)
        claimed, self._unsynced = self._unsynced, []
        return claimed

    def close(self) -> None:
        """Close the file; a failure here is remembered, never raised."""
        if self.writer is None:
            return
        if self.failed:
            self.writer.abandon()
            return
        try:
            self.writer.close()
        except OSError as exc:
            self.failures.broke(self.path, exc)

    def _check_file(self) -> None:
        """The file this run appends to is still the output: not deleted, not replaced by another program (an
        editor's save, a `mv`, a cleanup script). Rows written to a replaced file are not claimed."""
        assert self.writer is not None
        try:
            here = self.path.stat()
            same = (here.st_dev, here.st_ino) == self.writer.identity()
        except FileNotFoundError:
            same = False
        if not same:
            self.failed = True
            failure = WriteFailed(str(self.path), "it was replaced or deleted by another program while this run "
                                  "wrote to it", "the rows written since are not in it; run again with --resume "
                                  "(the records missing from it are done again)")
            self.failures.first = self.failures.first or failure
            raise failure

    def _write(self, action: Callable[[], None]) -> None:
        if self.failed:
            raise self.failures.first or WriteFailed(str(self.path), "an earlier write failed")
        try:
            action()
        except OSError as exc:
            self.failed = True
            raise self.failures.broke(self.path, exc) from None
