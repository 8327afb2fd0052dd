"""How a text table is written: its encoding, separator and line ends, sniffed from its first bytes unless
given (`--encoding`, `--delimiter`). The text readers (`text.py`) read with what these functions decide:
`sniff_encoding` for every text file, `sniff_separator` for CSV/TSV, `refuse_legacy_encoding` last."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO

from enrichkit.errors import InputError

DELIMITERS = {",": ",", ";": ";", "\t": "\t", "\\t": "\t", "tab": "\t", "|": "|"}  # what --delimiter accepts
SEPARATORS = (",", ";", "\t", "|")
SAMPLE_BYTES = 1 << 20  # opening a table reads at most this much to judge the whole file
UNREADABLE = "enrichkit.unreadable"  # the decoding error handler for codecs other than UTF-8
# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def _mark_unreadable(exc: UnicodeError) -> tuple[str, int]:
    # Bytes a codec cannot decode become a lone surrogate, which the row check reports (surrogateescape
    # cannot stand in: it refuses bytes below 0x80, which a UTF-16 or multi-byte codec may reject).
    if isinstance(exc, UnicodeDecodeError):
        return "\udcff", exc.end
    raise exc


codecs.register_error(UNREADABLE, _mark_unreadable)


@dataclass(frozen=True, slots=True)
class TextFormat:
    """What a CSV/TSV/JSONL file was found to be."""

    encoding: str  # in force, as shown: "utf-8", "utf-8-sig", "utf-16-le", "cp1252"
    codec: str  # decodes the bytes after the BOM
    bom: int  # its length in bytes
    errors: str  # the decoding error handler
    seekable: bool  # line ends are single ASCII bytes: every row's end is a byte offset
    newline: bytes = b"\n"  # b"\n" (LF or CRLF) or b"\r" (classic Mac)
    delimiter: str | None = None  # None for JSONL
    unquoted: tuple[tuple[str, int], ...] = ()  # separators seen outside quotes in the header line

    def unquoted_count(self, char: str) -> int:
        return dict(self.unquoted).get(char, 0)


def sniff_encoding(head: bytes, encoding: str | None, path: str) -> TextFormat:
    """The encoding of a text file whose first bytes are `head` (a BOM decides; else `encoding`; else UTF-8);
    raises InputError naming the flag to use."""
    name, codec, bom = _resolve_encoding(head, encoding, path)
    return TextFormat(name, codec, bom, "surrogateescape" if codec == "utf-8" else UNREADABLE, _line_safe(codec))


def sniff_separator(fmt: TextFormat, head: bytes, delimiter: str | None, order: tuple[str, ...]) -> TextFormat:
    """`fmt` with the separator (given, or the one of `order` seen most outside quotes in the first line; a tie
    goes to the earlier one, none seen to the first) and the line ends of a CSV/TSV file."""
    text = codecs.getincrementaldecoder(fmt.codec)("replace").decode(head[fmt.bom:fmt.bom + 65536])
    counts, newline = _scan_header_line(text)
    if delimiter is None:
        best = max(order, key=counts.__getitem__)
        chosen = best if counts[best] else order[0]
    elif delimiter.lower() in DELIMITERS:
        chosen = DELIMITERS[delimiter.lower()]
    else:
        raise InputError(f"--delimiter must be one of , ; tab |, not {delimiter!r}")
    return replace(fmt, newline=b"\r" if newline == "\r" else b"\n", delimiter=chosen, unquoted=tuple(counts.items()))


def delimiter_name(char: str) -> str:
    return "tab" if char == "\t" else f"'{char}'"


def split_lines(f: BinaryIO, newline: bytes) -> Iterator[bytes]:
    """A binary file's lines ending in `newline` (kept): readline only splits on LF, so CR-only files need this."""
    pending: list[bytes] = []
    while chunk := f.read(1 << 16):
        parts = chunk.split(newline)
        pending.append(parts[0])
        if len(parts) == 1:
            continue
        yield b"".join(pending) + newline
        for part in parts[1:-1]:
            yield part + newline
        pending = [parts[-1]]
    if tail := b"".join(pending):
        yield tail


def _resolve_encoding(head: bytes, given: str | None, path: str) -> tuple[str, str, int]:
    """(encoding in force, codec for the bytes after the BOM, BOM length). A BOM decides; else the flag; else UTF-8."""
    norm = None
    if given is not None:
        try:
            info = codecs.lookup(given)
        except LookupError:
            raise InputError(f"unknown encoding {given!r} (--encoding); use a Python codec name such as "
                             "utf-8, cp1252 or utf-16") from None
        if not getattr(info, "_is_text_encoding", True):
            raise InputError(f"--encoding {given!r} is not a text encoding; use one such as utf-8, cp1252 or utf-16")
        norm = "utf-8" if info.name == "utf-8-sig" else info.name
    for bom, name in _BOMS:
        if head.startswith(bom):
            codec = "utf-8" if name == "utf-8-sig" else name
            if norm is not None and norm not in (codec, codec[:-3]):  # utf-16 fits utf-16-le
                raise InputError(f"the file starts with a {codec.upper()} byte-order mark but --encoding {given} "
                                 "was given; drop --encoding", path)
            return name, codec, len(bom)
    if norm is not None:
        return norm, norm, 0
    probe = head[:4096]
    even, odd = probe[0::2], probe[1::2]
    for nuls, rest, name in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if len(nuls) >= 2 and nuls.count(0) >= 0.9 * len(nuls) and rest.count(0) <= 0.1 * len(rest):
            raise InputError(f"the file looks like UTF-16 without a byte-order mark; use --encoding {name}", path)
    if head.startswith(b"PK\x03\x04"):
        raise InputError("the file is a zip archive, not text (a workbook? name it .xlsx)", path)
    if len(probe.translate(None, _CONTROL_BYTES)) < 0.9 * len(probe):
        raise InputError("the file looks binary (compressed, or not a table), not text", path)
    return "utf-8", "utf-8", 0


# Bytes no text table holds in quantity (tab, LF, CR and form feed excepted); a few NULs are just bad rows.
_CONTROL_BYTES = bytes([*range(0, 9), 11, *range(14, 32)])


_LEGACY_RUN = re.compile("[\udc80-\udcff]+")
_REAL_UTF8 = re.compile("[\u0080-\ud7ff\ue000-\U0010ffff]")
_WORD_END = frozenset(" \t\r\n,;|\"")


def refuse_legacy_encoding(head: bytes, path: str) -> None:
    """A sample that is not UTF-8 but reads as words in a Windows code page (accented letters inside words,
    or whole words of high bytes, and no real UTF-8 character anywhere) is a file from an old Excel: stop and
    name the codec. Stray bad bytes in a UTF-8 file stay bad rows."""
    if len(head) == SAMPLE_BYTES:
        head = head[: head.rfind(b"\n") + 1] or head  # a character cut at the sample's end is no error
    try:
        head.decode("utf-8")
        return
    except UnicodeDecodeError:
        pass
    text = head.decode("utf-8", "surrogateescape")
    if _REAL_UTF8.search(text):
        return
    for run in _LEGACY_RUN.finditer(text):
        a, b = run.span()
        latin = _ascii_letter(text[a - 1:a]) or _ascii_letter(text[b:b + 1])
        if not latin and not (b - a >= 3 and all("\udcc0" <= c <= "\udcff" for c in run.group())):
            continue
        codec = "cp1252" if latin else "cp1251"
        while a > 0 and text[a - 1] not in _WORD_END:
            a -= 1
        while b < len(text) and text[b] not in _WORD_END:
            b += 1
        word = text[a:b].encode("utf-8", "surrogateescape")
        line = text.count("\n", 0, a) + 1
        other = "" if latin else " (or another Windows code page)"
        skip = ", or --encoding utf-8 to read it as UTF-8 and skip such rows" if line > 1 else ""
        raise InputError(f"the file is not UTF-8 (line {line}: {word!r} reads as {word.decode(codec, 'replace')!r} "
                         f"in {codec}); it looks like {codec}{other}: use --encoding {codec}{skip}", path)


def _ascii_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _scan_header_line(text: str) -> tuple[dict[str, int], str]:
    """Separators outside quotes in the first non-blank line, and that line's end ("\\r", "\\n" or "")."""
    counts = dict.fromkeys(SEPARATORS, 0)
    quoted = False
    line = text.lstrip("\r\n")
    for i, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in counts:
            counts[char] += 1
        elif char in "\r\n":
            return counts, "\r" if char == "\r" and line[i + 1:i + 2] != "\n" else "\n"
    return counts, ""


def _line_safe(codec: str) -> bool:
    # Lines can be split on raw bytes (and offsets kept) when line ends and separators are the ASCII bytes.
    try:
        return "\n\r,;\t|\"".encode(codec) == b"\n\r,;\t|\""
    except UnicodeError:
        return False
