"""`jobs.py export` and the dashboard's downloads: the output's whole rows as CSV, JSONL or XLSX, in
output order or in input order, with the values typed as the stages file declares its fields.

Typing: an enriched field declared `number`, `integer` or `boolean` is written as a JSON number or
boolean (an XLSX number or boolean cell); an empty enriched field is null (an empty cell); a value
that does not parse as its type stays text (counted in `Exported.untyped`), so nothing is lost.
Input columns stay text as they were read. Types come from the job's stages file, read as plain
TOML (no validation: a reader must not refuse a job because the stages file gained a key since).

Input order: one pass over the output indexes each whole row by record ID (16 bytes a row, not
the rows), then the input is walked as a run walks it and each record's row is read back by its
offset. Output rows no input record claims (the input changed since) come last, in output order.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import stat
import tomllib
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from enrichkit.errors import UsageError
from enrichkit.jobs.audit import WholeRows, input_scan, open_input
from enrichkit.jobs.state import JobStatus
from enrichkit.store.jobfiles import atomic_write, file_kind, read_regular
from enrichkit.store.output import neutralise

FORMATS = ("csv", "jsonl", "xlsx")
ORDERS = ("output", "input")
XLSX_MAX_ROWS = 1_048_576
XLSX_MAX_CHARS = 32_767
_TYPES = ("string", "number", "integer", "boolean")
_INTEGER = re.compile(r"^[+-]?\d+$")
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}
_STAGES_MAX = 1 << 20  # a stages file is a few KB; a bigger one (or a FIFO) is not read for types


@dataclass
class Exported:
    """What an export wrote; `strays` are rows of no input record (input order), `skipped` malformed rows."""

    rows: int = 0
    skipped: int = 0
    strays: int = 0
    untyped: int = 0
    typed_from: str = ""  # the stages file the types came from; "" when none could be read


# --- types ------------------------------------------------------------------------------------------


def declared_types(job: JobStatus) -> tuple[dict[str, str], str]:
    """(enriched column -> string | number | integer | boolean | json, the stages file read). Columns the file
    does not declare: `_cost_usd` is a number, a search stage's `<stage>_grounded` a boolean and its
    `<stage>_sources` and `<stage>_queries` JSON (arrays)."""
    cp = job.cp
    types: dict[str, str] = {name: "string" for name in cp.fields}
    types["_cost_usd"] = "number"
    source = ""
    if cp.stages_file:
        path = Path(str(cp.options.get("cwd") or ".")) / cp.stages_file
        try:
            data = tomllib.loads(read_regular(path, _STAGES_MAX)[0].decode("utf-8"))
            source = str(path)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            data = {}
        for table in data.get("stages") or []:
            if not isinstance(table, dict) or (cp.stages and table.get("name") not in cp.stages):
                continue
            if table.get("search"):
                types[f"{table.get('name')}_grounded"] = "boolean"
                if table.get("sources", True) is not False:  # JSON arrays in the CSV: arrays in JSONL
                    types[f"{table.get('name')}_sources"] = types[f"{table.get('name')}_queries"] = "json"
            for name, spec in (table.get("fields") or {}).items():
                declared = spec.get("type") if isinstance(spec, dict) else spec
                if declared in _TYPES:  # an http stage's plain value is its JSON path, not a type
                    types[str(name)] = str(declared)
    return types, source


def typed(value: str, kind: str) -> tuple[Any, bool]:
    """(the value as `kind` declares it, whether it parsed); "" is None for every kind."""
    if value == "":
        return None, True
    text = value.strip()
    try:
        if kind == "integer":
            number = float(text)
            if number.is_integer() and math.isfinite(number):
                return int(text) if _INTEGER.match(text) else int(number), True
        elif kind == "number":
            if _INTEGER.match(text):
                return int(text), True
            number = float(text)
            if math.isfinite(number):
                return number, True
        elif kind == "json":
            parsed = json.loads(text)
            if isinstance(parsed, list | dict):
                return parsed, True
        elif kind == "boolean":
            if text.lower() in _TRUE:
                return True, True
            if text.lower() in _FALSE:
                return False, True
        else:
            return value, True
    except ValueError:
        pass
    return value, False


class Typer:
    """Turns a row of CSV text into typed values, column by column; `clean` (a redactor) runs on text."""

    def __init__(self, header: list[str], types: dict[str, str], clean: Callable[[str], str] | None = None) -> None:
        self.header = header
        self.kinds = [types.get(name) for name in header]  # None: an input column, kept as text
        self.clean = clean
        self.untyped = 0

    def __call__(self, fields: list[str]) -> list[Any]:
        out: list[Any] = []
        for value, kind in zip(fields, self.kinds, strict=True):
            if self.clean is not None:
                value = self.clean(value)
            if kind is None:
                out.append(value)
                continue
            result, ok = typed(value, kind)
            self.untyped += not ok
            out.append(result)
        return out


# --- rows in input order ------------------------------------------------------------------------------


class RowIndex:
    """Record ID -> where its first whole row starts in the output, sorted by ID for bisection."""

    def __init__(self, source: WholeRows) -> None:
        ids: array[int] = array("Q")
        starts: array[int] = array("Q")
        for start, fields in source.rows_at():
            ids.append(int(fields[-2], 16))
            starts.append(start)
        order = sorted(range(len(ids)), key=ids.__getitem__)  # stable: the first of duplicates comes first
        self.ids = array("Q", (ids[i] for i in order))
        self.starts = array("Q", (starts[i] for i in order))
        self.used = bytearray(len(ids))

    def take(self, record_id: str) -> int | None:
        """Where the row of `record_id` starts, or None when the output has none."""
        value = int(record_id, 16)
        i = bisect_left(self.ids, value)
        if i == len(self.ids) or self.ids[i] != value:
            return None
        self.used[i] = 1
        return self.starts[i]

    def strays(self) -> list[int]:
        """Starts of the rows no record took (one per ID), in output order."""
        found = [self.starts[i] for i in range(len(self.ids))
                 if not self.used[i] and (i == 0 or self.ids[i - 1] != self.ids[i])]
        return sorted(found)


def _row_at(f: IO[bytes], start: int) -> list[str]:
    f.seek(start)

    def lines() -> Iterator[str]:
        while raw := f.readline():
            yield raw.decode("utf-8", "surrogateescape")

    return next(csv.reader(lines()))


def rows_in_input_order(job: JobStatus, source: WholeRows, result: Exported) -> Iterator[list[str]]:
    index = RowIndex(source)
    table = open_input(job)
    with open(source.path, "rb") as f:
        for pending in input_scan(job, table):
            start = index.take(pending.record_id)
            if start is not None:
                yield _row_at(f, start)
        strays = index.strays()
        result.strays = len(strays)
        for start in strays:
            yield _row_at(f, start)


# --- writers --------------------------------------------------------------------------------------------


def export_job(job: JobStatus, fmt: str, target: Path | IO[str], *, order: str = "output",
               clean: Callable[[str], str] | None = None, only_job: str | None = None) -> Exported:
    """Write the job's output so far to `target` (a path, replaced atomically; or a text stream for
    CSV/JSONL). `clean` runs on every text value (the dashboard redacts keys with it); `only_job` keeps
    only the rows whose `_job_id` is that job's (the dashboard serves nothing else)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if order not in ORDERS:
        raise UsageError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
    if not job.paths.output.exists():
        raise UsageError(f"{job.paths.output}: the job has written no output yet")
    mode = job.paths.output.stat().st_mode
    if not stat.S_ISREG(mode):  # a FIFO would block the export, a device never end it
        raise UsageError(f"{job.paths.output}: {file_kind(mode)}, not a regular file; not exported")
    source = WholeRows(job.paths.output)
    result = Exported()
    types, result.typed_from = declared_types(job)
    rows = source.rows() if order == "output" else rows_in_input_order(job, source, result)
    if only_job is not None:
        rows = (fields for fields in rows if fields and fields[-1] == only_job)
    first = next(rows, None)  # reads the header too
    header = source.header  # [] when the run has not written its header yet
    body = _chain(first, rows)
    if fmt == "xlsx":
        if not isinstance(target, Path):
            raise UsageError("an XLSX export needs a file (--output PATH)")
        target.parent.mkdir(parents=True, exist_ok=True)
        as_text = {name: "string" if kind == "json" else kind for name, kind in types.items()}  # a cell holds text
        atomic_write(target, lambda f: _write_xlsx(f, header, body, Typer(header, as_text, clean), result))
    else:
        def write(f: IO[str]) -> None:
            if fmt == "jsonl":
                _write_jsonl(f, header, body, Typer(header, types, clean), result)
            else:
                _write_csv(f, header, body, clean, result, enriched=set(types))

        if isinstance(target, Path):
            write_text_file(target, write, newline="" if fmt == "csv" else None)
        else:
            write(target)
    result.skipped = source.skipped
    return result


def _chain(first: list[str] | None, rest: Iterator[list[str]]) -> Iterator[list[str]]:
    if first is not None:
        yield first
        yield from rest


def write_text_file(path: Path, write: Callable[[IO[str]], None], *, newline: str | None = None) -> Path:
    """Replace `path` whole (`jobfiles.atomic_write`) with what `write` writes to it as UTF-8 text."""

    def save(raw: IO[bytes]) -> None:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline=newline)
        write(text)
        text.flush()
        text.detach()  # the raw file stays open for atomic_write's fsync

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save)
    return path


def _write_jsonl(f: IO[str], header: list[str], rows: Iterator[list[str]], typer: Typer, result: Exported) -> None:
    for fields in rows:
        f.write(json.dumps(dict(zip(header, typer(fields), strict=True)), ensure_ascii=False) + "\n")
        result.rows += 1
    result.untyped = typer.untyped


class CsvRows:
    """Rows written as valid CSV, one "\n" per row: a field holding a bare CR is quoted like one holding
    a newline (Python's writer quotes only its own line terminator's characters, so a "\n" writer would
    leave a CR bare, and a reader splits the row there)."""

    def __init__(self, f: IO[str]) -> None:
        self._f = f
        self._plain = csv.writer(f, lineterminator="\n")
        self._buf = io.StringIO()
        self._cr = csv.writer(self._buf, lineterminator="\r\n")

    def write(self, row: list[str]) -> None:
        if not any("\r" in value for value in row):
            self._plain.writerow(row)
            return
        self._buf.seek(0)
        self._buf.truncate()
        self._cr.writerow(row)
        self._f.write(self._buf.getvalue()[:-2] + "\n")


def _write_csv(f: IO[str], header: list[str], rows: Iterator[list[str]], clean: Callable[[str], str] | None,
               result: Exported, *, enriched: set[str]) -> None:
    """The output's rows as CSV, CR quoted, and formula-safe as the output is: an enriched value a
    spreadsheet would run is prefixed with `'` (the run did so already; an edited file gets it here)."""
    out = CsvRows(f)
    guarded = [name in enriched and name != "_cost_usd" for name in header]
    if header:
        out.write(header)
    for fields in rows:
        values = [clean(v) for v in fields] if clean else list(fields)
        out.write([neutralise(v) if guard else v for v, guard in zip(values, guarded, strict=False)])
        result.rows += 1


def _write_xlsx(f: IO[bytes], header: list[str], rows: Iterator[list[str]], typer: Typer, result: Exported) -> None:
    """One sheet, streamed (openpyxl write-only). Text is always a text cell, so a value such as
    `=HYPERLINK(...)` stays text, never a formula, and `007` keeps its zeros; typed fields are numbers
    and booleans."""
    import openpyxl
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("enriched")

    def cells(values: list[Any]) -> list[Any]:
        out = []
        for value in values:
            if isinstance(value, str):
                cell = WriteOnlyCell(ws, value=ILLEGAL_CHARACTERS_RE.sub("", value)[:XLSX_MAX_CHARS])
                cell.data_type = "s"  # openpyxl would otherwise turn a leading "=" into a formula
            else:
                cell = WriteOnlyCell(ws, value=value)
            out.append(cell)
        return out

    if header:
        ws.append(cells(list(header)))
    for fields in rows:
        result.rows += 1
        if result.rows >= XLSX_MAX_ROWS:
            raise UsageError(f"more than {XLSX_MAX_ROWS - 1:,} rows: too many for one XLSX sheet; "
                             "use --format jsonl")
        ws.append(cells(typer(fields)))
    result.untyped = typer.untyped
    wb.save(f)
