"""What each reader behind `InputTable` does its own way: the row estimate, the separator a suffix prefers,
and where a resumed read starts when rows have no byte offsets. (That every reader offers the whole `Table`
protocol is checked by mypy: `InputTable` returns a `Table` built from a table of concrete readers.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from enrichkit.tables.records import InputTable, Record, Table


def _workbook(path: Path, rows: list[list[object]]) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    for row in rows:
        wb.active.append(row)
    wb.save(path)
    return path


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.jsonl", "in.xlsx"])
def test_the_estimate_counts_the_data_rows_not_the_header_in_every_format(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    rows = [["a", "b"], ["1", "x"], ["2", "y"], ["3", "z"]]
    if name.endswith(".xlsx"):
        _workbook(path, [list(r) for r in rows])
    elif name.endswith(".jsonl"):
        path.write_text("".join(f'{{"a": "{a}", "b": "{b}"}}\n' for a, b in rows[1:]), encoding="utf-8")
    else:
        sep = "\t" if name.endswith(".tsv") else ","
        path.write_text("".join(sep.join(r) + "\n" for r in rows), encoding="utf-8")
    table: Table = InputTable(path)
    assert table.columns == ["a", "b"]
    assert table.estimate_rows() == 3
    assert sum(isinstance(i, Record) for i in table.rows()) == 3


@pytest.mark.parametrize(("name", "delimiter", "columns"), [("in.csv", ",", ["a", "b\tc"]),
                                                           ("in.tsv", "\t", ["a,b", "c"])])
def test_a_header_line_with_as_many_tabs_as_commas_is_read_by_the_suffix_s_separator(
        tmp_path: Path, name: str, delimiter: str, columns: list[str]) -> None:
    path = tmp_path / name
    path.write_text("a,b\tc\n1,2\t3\n", encoding="utf-8")
    table = InputTable(path)
    assert (table.delimiter, table.columns) == (delimiter, columns)
    one = tmp_path / f"one{path.suffix}"
    one.write_text("a\n1\n", encoding="utf-8")
    assert InputTable(one).delimiter == delimiter  # no separator at all: the suffix's own


def test_an_xlsx_resumed_at_a_position_reads_from_the_top(tmp_path: Path) -> None:
    table = InputTable(_workbook(tmp_path / "in.xlsx", [["a"], ["1"], ["2"], ["3"]]))
    full = list(table.rows())
    assert [i.end for i in full] == [0, 0, 0]  # no byte offsets to resume at
    assert list(table.rows(start=(123, 2))) == full
