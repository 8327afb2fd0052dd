"""Input tables stream records with stable IDs; unreadable rows become BadRow, not crashes."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from enrichkit.errors import InputError
from enrichkit.tables.records import BadRow, InputTable, Record, make_record_id


def test_record_id_is_stable_strips_whitespace_and_separates_columns() -> None:
    a = make_record_id({"x": " Acme ", "y": "1"}, ["x", "y"])
    assert a == make_record_id({"x": "Acme", "y": "1 "}, ["x", "y"])
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != make_record_id({"x": "Acme1", "y": ""}, ["x", "y"])  # "Acme"+"1" is not "Acme1"+""
    assert make_record_id({"x": "A", "y": "1"}, ["x"]) == make_record_id({"x": "A", "y": "2"}, ["x"])


def test_csv_with_quotes_newlines_bom_and_dotted_columns(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes('\ufefffund.title,poc name\n"Acme, ""Inc""","multi\nline"\nBé,ø\n'.encode())
    table = InputTable(path)
    assert table.columns == ["fund.title", "poc name"]
    rows = [(r.row, r.values) for r in table.rows()]
    assert rows == [(1, {"fund.title": 'Acme, "Inc"', "poc name": "multi\nline"}),
                    (2, {"fund.title": "Bé", "poc name": "ø"})]


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl"])
def test_rows_restart_after_any_row_end_exactly_as_a_full_scan(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_bytes('\ufeffa,b\n1,"multi\nline"\n\n2,x\nbad\n3,"q ""x"""\n4,é\n'.encode())
    else:
        path.write_text('{"a": 1}\n\n{"a": 2}\nnope\n{"a": "é"}\n', encoding="utf-8")
    table = InputTable(path)
    full = list(table.rows())
    assert all(item.end > 0 for item in full)
    for i, item in enumerate(full):
        assert list(table.rows(start=(item.end, item.row))) == full[i + 1:]


def test_bad_rows_are_reported_with_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b\n1,2\n3\n\n4,\x005\n\xff\xfe,6\n7,8\n9,10\n11,12\n")  # (mostly good: a good file)
    items = list(InputTable(path).rows())
    assert [type(i).__name__ for i in items] == ["Record", "BadRow", "BadRow", "BadRow", "Record", "Record", "Record"]
    assert [i.row for i in items] == [1, 2, 3, 4, 5, 6, 7]
    bad = [i for i in items if isinstance(i, BadRow)]
    assert "ragged" in bad[0].message and "NUL" in bad[1].message and "UTF-8" in bad[2].message


def test_csv_is_streamed_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write("a,b\n")
        for i in range(10_000):
            f.write(f"{i},value {i}\n")
    tracemalloc.start()
    count = sum(1 for _ in InputTable(path).rows())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 10_000
    assert peak < 2_000_000  # streamed: ~1 MB (buffers); a list of the 10k records would need over 4 MB


def test_jsonl_values_are_stringified_and_foreign_keys_are_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1, "b": null, "c": true}\n{"a": 2.5, "c": {"x": 1}}\nnot json\n{"a": 3, "z": 1}\n',
                    encoding="utf-8")
    items = list(InputTable(path).rows())
    assert (items[0].row, items[0].values) == (1, {"a": "1", "b": "", "c": "true"})
    assert (items[1].row, items[1].values) == (2, {"a": "2.5", "b": "", "c": '{"x":1}'})
    assert isinstance(items[2], BadRow) and isinstance(items[3], BadRow)
    assert "z" in items[3].message


def test_xlsx_first_sheet_header_and_values(tmp_path: Path) -> None:
    import datetime as dt

    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["name", "size", "when"])
    ws.append(["Acme", 12.0, dt.date(2026, 1, 2)])
    ws.append(["Beta", 1.5, None])
    ws.append([None, None, None])
    wb.create_sheet("other").append(["ignored"])
    path = tmp_path / "in.xlsx"
    wb.save(path)
    table = InputTable(path)
    assert table.columns == ["name", "size", "when"]
    assert [r.values for r in table.rows() if isinstance(r, Record)] == [
        {"name": "Acme", "size": "12", "when": "2026-01-02T00:00:00"},
        {"name": "Beta", "size": "1.5", "when": ""}]


@pytest.mark.parametrize(("content", "message"), [
    ("", "empty"), ("a,a\n", "duplicate"), (",b\n", "empty column name"), ("\n\n", "no header")])
def test_whole_file_problems_raise_input_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "in.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        InputTable(path)


def test_require_columns_names_the_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(InputError, match="'c'"):
        InputTable(path).require_columns(["a", "c"], "--id-columns")
