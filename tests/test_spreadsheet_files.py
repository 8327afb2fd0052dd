"""Files as spreadsheets make them, through the CLI: read right, or stopped with a line naming the flag.
Never "Done" with records silently lost."""

from __future__ import annotations

import json

import pytest

from conftest import COLUMNS, Workspace, make_rows, read_json

ROWS = make_rows(6)
ROWS[2]["poc.first_name"] = "Zoë"
ROWS[4]["fund.manager"] = "Société Générale"


def _text(sep: str = ",", newline: str = "\n") -> str:
    lines = [sep.join(COLUMNS)] + [sep.join(r[c] for c in COLUMNS) for r in ROWS]
    return newline.join(lines) + newline


def _done(ws: Workspace, *args: str) -> None:
    proc = ws.run(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Done: all 6 records enriched." in proc.stderr
    firsts = sorted(row.split(",")[2] for row in ws.output.read_text(encoding="utf-8").splitlines()[1:])
    assert "Zoë" in firsts


@pytest.mark.parametrize(("name", "data"), [
    ("utf8 bom crlf", b"\xef\xbb\xbf" + _text(newline="\r\n").encode("utf-8")),
    ("classic mac cr only", _text(newline="\r").encode("utf-8")),
    ("excel unicode text (utf-16, tabs)", _text(sep="\t", newline="\r\n").encode("utf-16")),
    ("european excel (semicolons)", _text(sep=";").encode("utf-8")),
])
def test_files_as_excel_saves_them_are_read_whole(ws: Workspace, name: str, data: bytes) -> None:
    ws.input.write_bytes(data)
    _done(ws)


def test_windows_1252_stops_naming_the_flag_then_reads_with_it(ws: Workspace) -> None:
    ws.input.write_bytes(_text().encode("cp1252"))
    proc = ws.run()
    assert proc.returncode == 2, proc.stderr
    assert "--encoding cp1252" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert ws.fake.stats()["generate"] == 0 and not ws.checkpoint.exists()
    _done(ws, "--encoding", "cp1252")
    assert "Société Générale" in ws.output.read_text(encoding="utf-8")


def test_an_explicit_delimiter_overrides_the_sniffed_one(ws: Workspace) -> None:
    ws.input.write_bytes(_text(sep="|").encode("utf-8"))
    _done(ws, "--delimiter", "|")


def test_trailing_empty_rows_are_skipped_and_counted(ws: Workspace) -> None:
    ws.input.write_text(_text() + ",,,,\n,,,,\n", encoding="utf-8")
    _done(ws)
    assert ws.fake.stats()["generate"] == 6
    assert read_json(ws.report)["counts"]["empty_rows"] == 2


def test_a_file_of_unreadable_rows_stops_before_any_request(ws: Workspace) -> None:
    ws.input.write_text(",".join(COLUMNS) + "\n" + "only,two\n" * 30, encoding="utf-8")
    proc = ws.run()
    assert proc.returncode == 2, proc.stderr
    assert "--delimiter" in proc.stderr or "--encoding" in proc.stderr
    assert ws.fake.stats()["generate"] == 0


def test_an_xlsx_formula_without_a_cached_value_is_an_input_error(ws: Workspace) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    sheet = wb.active
    sheet.append(COLUMNS)
    for i, row in enumerate(ROWS):
        values = [row[c] for c in COLUMNS]
        if i == 1:
            values[1] = '=CONCATENATE("Man", "ager")'  # openpyxl writes the formula, never its value
        sheet.append(values)
    ws.input = ws.tmp / "input.xlsx"
    wb.save(ws.input)
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    errors = [json.loads(line) for line in ws.errors.read_text().splitlines()]
    assert [(e["row"], e["error_type"]) for e in errors] == [(2, "input_error")]
    assert "formula" in errors[0]["message"]
    assert len(ws.output_ids()) == 5
