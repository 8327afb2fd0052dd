"""What the two text readers (CSV/TSV in `delimited.py`, JSONL in `jsonlines.py`) share: the format sniffed
from the first bytes, the start of a resumed read at a byte offset, and the row estimate from line ends."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Generator, Iterator

from enrichkit.tables.records import RowItem, TableBase
from enrichkit.tables.sniffing import SAMPLE_BYTES, TextFormat, refuse_legacy_encoding, sniff_encoding


class TextTable(TableBase):
    """A text input file; its rows end at known byte offsets where the encoding allows (`TextFormat.seekable`)."""

    header_lines = 1  # lines before the first data row (for the estimate)
    _fmt: TextFormat

    def _open_text(self, shown: str, encoding: str | None, delimiter: str | None) -> None:
        """Sniff the format from the first bytes (refusing what the flags cannot fix), read the header."""
        with open(self.path, "rb") as f:
            head = f.read(SAMPLE_BYTES)
        fmt = self._text_format(sniff_encoding(head, encoding, shown), head, delimiter, shown)
        if encoding is None and not fmt.bom:
            refuse_legacy_encoding(head, shown)
        self._fmt = fmt
        self.encoding = fmt.encoding
        self.delimiter = fmt.delimiter
        self.columns = self._read_header(self._raw_header())

    @abstractmethod
    def _text_format(self, fmt: TextFormat, head: bytes, delimiter: str | None, shown: str) -> TextFormat:
        """`fmt` (the encoding sniffed from `head`) completed or refused for this format (`shown`: the path)."""

    @abstractmethod
    def _raw_header(self) -> Iterator[list[str]]:
        """The header's cells, unchecked."""

    @abstractmethod
    def _rows(self, offset: int, first_row: int) -> Generator[RowItem, None, None]:
        """The rows after byte `offset`, the first numbered `first_row` + 1 (offset 0: from the top)."""

    def rows(self, start: tuple[int, int] | None = None) -> Iterator[RowItem]:
        offset, row = start if start and self._fmt.seekable else (0, 0)
        yield from self._rows(offset, row)

    def estimate_rows(self) -> int:
        """Data rows from the line ends (a quoted field may hold more)."""
        newline = self._fmt.newline
        lines = 0
        last = newline
        with open(self.path, "rb") as f:
            while chunk := f.read(1 << 20):
                lines += chunk.count(newline)
                last = chunk[-1:]
        lines += last != newline
        return max(0, lines - self.header_lines)

    def _label(self) -> str:
        return "UTF-8" if self._fmt.codec == "utf-8" else self._fmt.encoding
