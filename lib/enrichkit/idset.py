"""A compact set of 64-bit record IDs.

A million IDs in a Python `set[str]` cost ~100 MB; here they cost ~8 MB: a sorted `array('Q')`
searched by bisection, plus a small `set[int]` of recent additions merged into the array when it
grows (the merge threshold grows with the array, so merging stays amortised O(1) per add).
"""

from __future__ import annotations

import binascii
import heapq
import itertools
import operator
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator

_MIN_MERGE = 65536


class IdSet:
    """Set of 16-hex-char record IDs stored as unsigned 64-bit integers."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._base = array("Q")
        self._recent: set[int] = set()
        for record_id in ids:
            self.add(record_id)

    @classmethod
    def from_hex_blob(cls, blob: bytes) -> IdSet:
        """Build from concatenated 16-char hex IDs (how the checkpoint stores them), at C speed."""
        raw = binascii.unhexlify(blob)  # ValueError (binascii.Error) on anything but hex digits
        values = array("Q")
        values.frombytes(raw)
        if sys.byteorder == "little":
            values.byteswap()  # the hex is big-endian
        ids = cls()
        # The checkpoint writes them ascending; sort (with a transient copy) only if someone edited it.
        ascending = all(map(operator.lt, values, itertools.islice(values, 1, None)))
        ids._base = values if ascending else array("Q", sorted(set(values)))
        return ids

    def add(self, record_id: str) -> None:
        value = int(record_id, 16)
        if value in self._recent or self._in_base(value):
            return
        self._recent.add(value)
        if len(self._recent) >= max(_MIN_MERGE, len(self._base) // 8):
            self._merge()

    def __contains__(self, record_id: object) -> bool:
        if not isinstance(record_id, str):
            return False
        value = int(record_id, 16)
        return value in self._recent or self._in_base(value)

    def __len__(self) -> int:
        return len(self._base) + len(self._recent)

    def __iter__(self) -> Iterator[str]:
        for value in self.values():
            yield f"{value:016x}"

    def values(self) -> Iterator[int]:
        """The IDs as integers, in ascending order."""
        return heapq.merge(self._base, sorted(self._recent))

    def hex_chunks(self, size: int = 50000) -> Iterator[str]:
        """The IDs as JSON strings (`"…", "…"`) in pieces of `size`, made at C speed, never all at once."""
        self._merge()
        for start in range(0, len(self._base), size):
            chunk = self._base[start:start + size]
            if sys.byteorder == "little":
                chunk.byteswap()  # big-endian bytes give the hex digits in order
            text = chunk.tobytes().hex()
            yield '"' + '", "'.join([text[i:i + 16] for i in range(0, len(text), 16)]) + '"'

    def _in_base(self, value: int) -> bool:
        base = self._base
        i = bisect_left(base, value)
        return i < len(base) and base[i] == value

    def _merge(self) -> None:
        """Fold the recent additions into the sorted array: a bisection and a C-level copy per addition."""
        if not self._recent:
            return
        base, merged, prev = self._base, array("Q"), 0
        for value in sorted(self._recent):
            i = bisect_left(base, value, prev)
            merged.extend(base[prev:i])
            merged.append(value)
            prev = i
        merged.extend(base[prev:])
        self._base = merged
        self._recent = set()
