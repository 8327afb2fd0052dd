"""Files as spreadsheets make them: each test builds the bytes Excel (or Windows, or an old Mac) writes,
and the table reads them as the user sees them, or stops at once saying what it saw and which flag to use."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest

from enrichkit.errors import InputError
from enrichkit.tables import records
from enrichkit.tables.records import BadRow, EmptyRow, InputTable, Record, RowItem, make_record_id

ROWS = [["fund.title", "city", "note"], ["Société Générale", "Zürich", "multi\nline"], ["Acme, Inc", "Köln", "ok"],
        ["Beta", "Paris", "l’été"]]


def excel_csv(rows: list[list[str]], *, encoding: str = "utf-8-sig", delimiter: str = ",",
              newline: str = "\r\n") -> bytes:
    """A CSV the way a spreadsheet saves it: quoting as Excel does (any field holding the separator, a quote,
    CR or LF), its line ends, its encoding and BOM."""

    def cell(value: str) -> str:
        special = any(c in value for c in (delimiter, '"', "\r", "\n"))
        return '"' + value.replace('"', '""') + '"' if special else value

    text = "".join(delimiter.join(map(cell, row)) + newline for row in rows)
    if encoding == "utf-16-le":  # Excel's "Unicode text": a BOM, then UTF-16 LE
        text = "\ufeff" + text
    return text.encode(encoding)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def values(items: list[RowItem]) -> list[dict[str, str]]:
    return [i.values for i in items if isinstance(i, Record)]


def expected(rows: list[list[str]]) -> list[dict[str, str]]:
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def test_utf8_with_bom_and_crlf_reads_the_same_values_and_ids_as_plain_utf8(tmp_path: Path) -> None:
    excel = InputTable(write(tmp_path, "excel.csv", excel_csv(ROWS)))
    plain = InputTable(write(tmp_path, "plain.csv", excel_csv(ROWS, encoding="utf-8", newline="\n")))
    assert (excel.encoding, excel.delimiter) == ("utf-8-sig", ",")
    assert excel.describe_format() == "utf-8-sig, ',' separated, 3 columns"
    assert values(list(excel.rows())) == values(list(plain.rows())) == expected(ROWS)
    ids = [make_record_id(v, excel.columns) for v in values(list(excel.rows()))]
    assert ids == [make_record_id(v, plain.columns) for v in values(list(plain.rows()))]


def test_classic_mac_cr_only_line_ends(tmp_path: Path) -> None:
    table = InputTable(write(tmp_path, "mac.csv", excel_csv(ROWS, encoding="utf-8", newline="\r")))
    assert "CR line ends" in table.describe_format()
    assert values(list(table.rows())) == expected(ROWS)
    assert table.estimate_rows() == 3  # CRs counted, not the LF inside the quoted cell
    # Larger than a read chunk, so rows (and a quoted CR) straddle chunk boundaries.
    many = [ROWS[0], *([f"Fund {i}", "Genève", "a\rb" if i % 7 else ""] for i in range(5_000))]
    big = InputTable(write(tmp_path, "big.csv", excel_csv(many, encoding="utf-8", newline="\r")))
    assert values(list(big.rows())) == expected(many)


def test_excel_unicode_text_is_utf16_le_with_bom_and_tab_separated(tmp_path: Path) -> None:
    for name in ("unicode.csv", "unicode.tsv"):
        table = InputTable(write(tmp_path, name, excel_csv(ROWS, encoding="utf-16-le", delimiter="\t")))
        assert (table.encoding, table.delimiter) == ("utf-16-le", "\t")
        assert table.columns == ROWS[0]
        items = list(table.rows())
        assert values(items) == expected(ROWS)
        # No byte offsets in UTF-16: every item says so, and a resume reads from the top.
        assert {i.end for i in items} == {0}
        assert list(table.rows(start=(0, 2))) == items


def test_utf16_without_a_bom_names_the_encoding_flag(tmp_path: Path) -> None:
    data = excel_csv(ROWS, encoding="utf-16-le", delimiter="\t")[2:]
    with pytest.raises(InputError, match="UTF-16 without a byte-order mark; use --encoding utf-16-le"):
        InputTable(write(tmp_path, "nobom.csv", data))


def test_cp1252_from_windows_excel_stops_naming_the_codec_and_reads_with_it(tmp_path: Path) -> None:
    path = write(tmp_path, "windows.csv", excel_csv(ROWS, encoding="cp1252"))
    with pytest.raises(InputError, match=r"not UTF-8 .*'Société' in cp1252.*use --encoding cp1252") as info:
        InputTable(path)
    assert "\n" not in str(info.value)
    table = InputTable(path, encoding="cp1252")
    assert table.columns == ROWS[0]
    assert values(list(table.rows())) == expected(ROWS)
    assert table.describe_format() == "cp1252, ',' separated, 3 columns"


def test_cp1251_cyrillic_without_a_flag_names_a_windows_code_page(tmp_path: Path) -> None:
    rows = [["name", "city"], ["Иван", "Москва"], ["Acme", "Paris"]]
    path = write(tmp_path, "cyr.csv", excel_csv(rows, encoding="cp1251"))
    with pytest.raises(InputError, match=r"'Иван' in cp1251.*--encoding cp1251"):
        InputTable(path)
    assert values(list(InputTable(path, encoding="windows-1251").rows())) == expected(rows)


def test_a_stray_bad_byte_in_a_utf8_file_is_one_bad_row_not_a_whole_file_error(tmp_path: Path) -> None:
    data = excel_csv(ROWS) + "Café Noir,Lyon,x\r\n".encode("cp1252") + b"Last,Bern,y\r\n"
    items = list(InputTable(write(tmp_path, "mixed.csv", data)).rows())
    assert [type(i) for i in items] == [Record, Record, Record, BadRow, Record]
    assert "not valid UTF-8" in items[3].message  # type: ignore[union-attr]


def test_semicolon_csv_from_european_excel_is_sniffed_or_given(tmp_path: Path) -> None:
    rows = [["Name", "Stadt", "Betrag"], ["Müller", "Köln", "1,50"], ["Weiß; AG", "Wien", "2,00"]]
    path = write(tmp_path, "eu.csv", excel_csv(rows, delimiter=";"))
    for table in (InputTable(path), InputTable(path, delimiter=";")):
        assert table.delimiter == ";"
        assert values(list(table.rows())) == expected(rows)
    with pytest.raises(InputError, match=r"one column 'Name;Stadt;Betrag'.*like ';'-separated: use --delimiter ';'"):
        InputTable(path, delimiter=",")


@pytest.mark.parametrize(("given", "char"), [("tab", "\t"), ("\\t", "\t"), ("\t", "\t"), ("|", "|"), (",", ",")])
def test_delimiter_flag_spellings(tmp_path: Path, given: str, char: str) -> None:
    path = write(tmp_path, "in.csv", excel_csv(ROWS, delimiter=char))
    assert values(list(InputTable(path, delimiter=given).rows())) == expected(ROWS)


def test_unknown_encoding_or_delimiter_names_the_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "in.csv", excel_csv(ROWS))
    with pytest.raises(InputError, match="unknown encoding 'latin-9x' \\(--encoding\\)"):
        InputTable(path, encoding="latin-9x")
    with pytest.raises(InputError, match="--delimiter must be one of"):
        InputTable(path, delimiter="::")
    with pytest.raises(InputError, match="UTF-8 byte-order mark but --encoding cp1252"):
        InputTable(path, encoding="cp1252")


def test_trailing_empty_rows_are_empty_rows_never_records(tmp_path: Path) -> None:
    data = excel_csv([*ROWS, ["", "", ""], ["", "", ""]]) + b",,\r\n , ,\r\n"
    table = InputTable(write(tmp_path, "trailing.csv", data))
    items = list(table.rows())
    assert [type(i) for i in items] == [Record] * 3 + [EmptyRow] * 4
    assert [i.row for i in items] == [1, 2, 3, 4, 5, 6, 7]
    assert list(table.rows(start=(items[3].end, items[3].row))) == items[4:]


def test_a_file_of_only_unreadable_rows_stops_saying_what_was_seen(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", b"a,b,c\n1|2|3\n4|5|6\n7|8|9\n")
    with pytest.raises(InputError) as info:
        InputTable(path)
    message = str(info.value)
    for needle in ("3 of the first 3 rows", "utf-8, ',' separated, 3 columns", "row 1: ragged", "--delimiter"):
        assert needle in message, message


def test_mostly_unreadable_rows_stop_but_a_few_do_not(tmp_path: Path) -> None:
    good, bad = "x,y\n", "x\n"
    with pytest.raises(InputError, match="3 of the first 5 rows"):
        InputTable(write(tmp_path, "most.csv", ("a,b\n" + good * 2 + bad * 3).encode()))
    items = list(InputTable(write(tmp_path, "few.csv", ("a,b\n" + good * 3 + bad * 2).encode())).rows())
    assert sum(isinstance(i, BadRow) for i in items) == 2


def test_the_opening_check_reads_a_bounded_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "SAMPLE_ROWS", 10)
    path = write(tmp_path, "late.csv", ("a,b\n" + "x,y\n" * 10 + "x\n" * 50).encode())
    table = InputTable(path)  # the bad rows lie beyond the sample: the caller judges the full pass
    items = list(table.rows())
    bad = [i for i in items if isinstance(i, BadRow)]
    error = table.unreadable_error(len(bad), len(items), bad[0])
    assert str(error).startswith(f"{path}: 50 of 60 rows cannot be read as utf-8, ',' separated, 2 columns (row 11")


@pytest.mark.parametrize("shape", ["crlf", "cr", "cp1252", "semicolon-lf"])
def test_resume_offsets_yield_exactly_the_rest(tmp_path: Path, shape: str) -> None:
    rows = [*ROWS, ["", "", ""], ["Ragged"], ["Crème brûlée", "Genève", "x\ry"]]
    encoding, delimiter, newline = {"crlf": ("utf-8-sig", ",", "\r\n"), "cr": ("utf-8", ",", "\r"),
                                    "cp1252": ("cp1252", ",", "\r\n"), "semicolon-lf": ("utf-8", ";", "\n")}[shape]
    path = write(tmp_path, "in.csv", excel_csv(rows, encoding=encoding, delimiter=delimiter, newline=newline))
    table = InputTable(path, encoding="cp1252" if shape == "cp1252" else None)
    full = list(table.rows())
    assert [type(i) for i in full] == [Record] * 3 + [EmptyRow, BadRow, Record]
    assert full[-1].end == path.stat().st_size
    for n, item in enumerate(full):
        assert list(table.rows(start=(item.end, item.row))) == full[n + 1:]


def test_jsonl_rows_with_no_value_are_empty_rows(tmp_path: Path) -> None:
    table = InputTable(write(tmp_path, "in.jsonl", b'{"a": 1, "b": "x"}\n{}\n{"a": null, "b": " "}\n'))
    assert [type(i) for i in table.rows()] == [Record, EmptyRow, EmptyRow]
    assert table.describe_format() == "utf-8 JSON lines, 2 keys"
    with pytest.raises(InputError, match=r"--delimiter applies to \.csv and \.tsv"):
        InputTable(table.path, delimiter=";")


# --- XLSX -------------------------------------------------------------------------------------------------


def _workbook(tmp_path: Path, rows: list[list[object]], patches: dict[bytes, bytes] | None = None) -> Path:
    """An XLSX as openpyxl writes it (formulas with no computed value), with the sheet XML patched where a
    test needs what Excel writes instead (a cached result)."""
    import openpyxl

    wb = openpyxl.Workbook()
    for row in rows:
        wb.active.append(row)
    path = tmp_path / "in.xlsx"
    wb.save(path)
    if patches:
        blob = io.BytesIO()
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(blob, "w") as dst:
            for item in src.infolist():
                data = src.read(item.filename)
                if item.filename == "xl/worksheets/sheet1.xml":
                    for old, new in patches.items():
                        assert old in data, old
                        data = data.replace(old, new)
                dst.writestr(item, data)
        path.write_bytes(blob.getvalue())
    return path


def test_xlsx_formula_without_a_computed_value_is_a_bad_row_naming_the_column(tmp_path: Path) -> None:
    path = _workbook(tmp_path, [["name", "total"], ["a", "=1+2"], ["b", "=B9"], ["c", "=2*2"], [None, None],
                                [None, "=1"], ["d", 5], ["e", 6], ["f", 7]],
                     {b'<c r="B3"><f>B9</f><v /></c>': b'<c r="B3" t="str"><f>B9</f><v></v></c>',  # Excel: ""
                      b'<c r="B4"><f>2*2</f><v /></c>': b'<c r="B4"><f>2*2</f><v>4</v></c>'})  # Excel: 4
    items = list(InputTable(path).rows())
    assert [type(i) for i in items] == [BadRow, Record, Record, EmptyRow, BadRow, Record, Record, Record]
    assert "column 'total' is a formula with no computed value" in items[0].message  # type: ignore[union-attr]
    assert [i.values["total"] for i in items if isinstance(i, Record)] == ["", "4", "5", "6", "7"]


def test_xlsx_where_every_formula_lacks_a_value_stops_at_open(tmp_path: Path) -> None:
    path = _workbook(tmp_path, [["name", "total"], *([f"n{i}", f"=A{i}&1"] for i in range(2, 6))])
    with pytest.raises(InputError, match=r"4 of the first 4 rows .*formula.*open and save the workbook"):
        InputTable(path)


def test_xlsx_all_empty_rows_are_empty_rows_and_flags_do_not_apply(tmp_path: Path) -> None:
    path = _workbook(tmp_path, [["a", "b"], ["1", "2"], [None, None], ["", "  "], ["3", "4"]])
    table = InputTable(path)
    assert [type(i) for i in table.rows()] == [Record, EmptyRow, EmptyRow, Record]
    assert (table.encoding, table.delimiter) == (None, None)
    assert table.describe_format() == "xlsx (first sheet), 2 columns"
    with pytest.raises(InputError, match=r"--encoding does not apply to \.xlsx"):
        InputTable(path, encoding="utf-8")


@pytest.mark.parametrize(("data", "message"), [
    (b"PK\x03\x04" + bytes(200), "zip archive, not text"),
    (gzip.compress(b"a,b\n" + b"1,2\n" * 500, mtime=0), "looks binary")], ids=["zip", "gzip"])
def test_a_workbook_or_compressed_file_named_csv_is_refused_as_not_text(tmp_path: Path, data: bytes,
                                                                        message: str) -> None:
    with pytest.raises(InputError, match=message):
        InputTable(write(tmp_path, "in.csv", data))
