"""A compact set of 64-bit record IDs.

A million IDs in a Python `set[str]` cost ~100 MB; here they cost ~9 MB: 4,096 sorted
`array('Q')` buckets chosen by the ID's top 12 bits. A lookup bisects one small bucket and an
insert shifts part of one (a C memmove of about a kilobyte at a million IDs), so every
operation costs about the same at 100,000 IDs as at 10 million, and the buckets read in
order are the IDs in ascending order.
"""

from __future__ import annotations

import binascii
import hashlib
import itertools
import operator
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator

_BUCKET_BITS = 12
_SHIFT = 64 - _BUCKET_BITS
# What every empty bucket reads until its first insert: 4,096 arrays cost ~350 KB and 5 ms to make, and a
# checkpoint read without its IDs (the job tools, the dashboard's 10,000 jobs) holds two empty sets; a set of
# 40 IDs makes 40 arrays, not 4,096.
_NO_BUCKETS: tuple[array[int], ...] = tuple(array("Q") for _ in range(1 << _BUCKET_BITS))


class IdSet:
    """Set of 16-hex-char record IDs stored as unsigned 64-bit integers."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._buckets: list[array[int]] | tuple[array[int], ...] = _NO_BUCKETS  # shared, never written
        self._len = 0
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
        ids._buckets = ids._own_buckets()
        # The checkpoint writes them ascending: cut the array at each bucket's first value. If someone
        # edited the file out of order, add them one by one instead.
        if all(map(operator.lt, values, itertools.islice(values, 1, None))):
            start = 0
            for b in range(len(ids._buckets)):
                end = bisect_left(values, (b + 1) << _SHIFT, start)
                if end > start:
                    ids._buckets[b] = values[start:end]
                    start = end
            ids._len = len(values)
        else:
            for value in values:
                ids._add_value(value)
        return ids

    def add(self, record_id: str) -> None:
        self._add_value(int(record_id, 16))

    def _own_buckets(self) -> list[array[int]]:
        if isinstance(self._buckets, tuple):
            self._buckets = list(_NO_BUCKETS)  # still the shared empty arrays: each is replaced at its first insert
        return self._buckets

    def _add_value(self, value: int) -> None:
        buckets = self._buckets
        if type(buckets) is not list:
            buckets = self._own_buckets()
        b = value >> _SHIFT
        bucket = buckets[b]
        if bucket is _NO_BUCKETS[b]:
            bucket = buckets[b] = array("Q")
        i = bisect_left(bucket, value)
        if i == len(bucket) or bucket[i] != value:
            bucket.insert(i, value)
            self._len += 1

    def __contains__(self, record_id: object) -> bool:
        if not isinstance(record_id, str):
            return False
        value = int(record_id, 16)
        bucket = self._buckets[value >> _SHIFT]
        i = bisect_left(bucket, value)
        return i < len(bucket) and bucket[i] == value

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[str]:
        for value in self.values():
            yield f"{value:016x}"

    def values(self) -> Iterator[int]:
        """The IDs as integers, in ascending order."""
        return itertools.chain.from_iterable(self._buckets)

    def count_not_in(self, other: IdSet) -> int:
        """How many of these IDs `other` lacks, bucket by bucket as integers (no string per ID)."""
        return sum(len(set(mine).difference(theirs)) if mine else 0
                   for mine, theirs in zip(self._buckets, other._buckets, strict=True))

    def digest(self) -> str:
        """A digest of the IDs (bucket by bucket, at C speed): equal exactly when the sets are."""
        h = hashlib.blake2b(digest_size=16)
        for bucket in self._buckets:
            if bucket:
                h.update(bucket.tobytes())
        return h.hexdigest()

    def hex_chunks(self, size: int = 50000) -> Iterator[str]:
        """The IDs as JSON strings (`"…", "…"`) in pieces of about `size`, made at C speed, never all at once."""
        pending = array("Q")
        for bucket in self._buckets:
            pending.extend(bucket)
            if len(pending) >= size:
                yield _as_json_strings(pending)
                pending = array("Q")
        if pending:
            yield _as_json_strings(pending)


def _as_json_strings(values: array) -> str:  # type: ignore[type-arg]
    if sys.byteorder == "little":
        values.byteswap()  # big-endian bytes give the hex digits in order
    text = values.tobytes().hex()
    return '"' + '", "'.join([text[i:i + 16] for i in range(0, len(text), 16)]) + '"'
