"""For Excel users: `--excel` starts the output CSV with a UTF-8 BOM (recorded with the job, written once, read
back on resume), the run's summary names the XLSX export, and `--output x.xlsx` is refused pointing there."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from conftest import Workspace, expected_ids, make_rows, write_csv
from enrichkit.jobs.cli import main as jobs_main
from enrichkit.store.readback import header_line, recover_output
from fakes import assert_exactly_once, run_cli

BOM = b"\xef\xbb\xbf"


def test_excel_writes_the_output_with_one_bom_that_a_bare_resume_keeps(ws: Workspace) -> None:
    rows = make_rows(12)
    rows[0]["fund.title"] = "Société Générale Crédit Fund"
    write_csv(ws.input, rows)
    first = ws.run("--excel", "--limit", "5")
    assert first.returncode == 1, first.stderr
    raw = ws.output.read_bytes()
    assert raw.startswith(BOM + b"fund.title,") and raw.count(BOM) == 1
    assert json.loads(ws.checkpoint.read_text())["options"]["excel"] is True
    resumed = ws.run("--resume")  # no --excel: the job recorded it
    assert resumed.returncode == 0, resumed.stderr
    raw = ws.output.read_bytes()
    assert raw.startswith(BOM) and raw.count(BOM) == 1
    assert "Société Générale Crédit Fund".encode() in raw
    assert_exactly_once(ws.output, expected_ids(ws))
    valid = run_cli(jobs_main, ["validate", str(ws.checkpoint)], env=ws.env(), cwd=ws.tmp)
    assert valid.returncode == 0, valid.stdout + valid.stderr


def test_without_excel_the_output_has_no_bom(ws: Workspace) -> None:
    assert ws.run("--limit", "3").returncode == 1
    assert ws.output.read_bytes().startswith(b"fund.title,")


def test_the_done_summary_names_the_xlsx_export_and_it_works(ws: Workspace) -> None:
    done = ws.run()
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    line = next(line for line in said.splitlines() if line.strip().startswith("for Excel:"))
    command = line.split("for Excel:", 1)[1].strip()
    assert " export " in command and "--format xlsx" in command
    assert command.endswith(shlex.quote(str(ws.output.with_suffix(".xlsx"))))
    exported = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd="/", timeout=120)
    assert exported.returncode == 0, exported.stderr
    assert ws.output.with_suffix(".xlsx").stat().st_size > 0


def test_an_xlsx_output_is_refused_pointing_at_the_export(ws: Workspace) -> None:
    proc = ws.run("--input", str(ws.input), "--output", str(ws.tmp / "out" / "funds.xlsx"), "--stages-file",
                  str(ws.stages), base=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "--output must be a .csv file, not funds.xlsx" in line
    assert "--excel" in line
    out = ws.tmp / "out"
    assert f"export {out / 'funds.progress.json'} --format xlsx --output {out / 'funds.xlsx'}" in line


def test_a_header_torn_after_its_bom_is_cut_and_a_whole_header_is_kept(tmp_path: Path) -> None:
    columns = ["fund.title", "poc_name", "_cost_usd", "_record_id", "_job_id"]
    header = header_line(columns)
    torn = tmp_path / "torn.csv"
    torn.write_bytes(BOM + header[:7])  # a crash while the header was written
    assert recover_output(torn, columns).torn_bytes == len(BOM) + 7 and torn.stat().st_size == 0
    whole = tmp_path / "whole.csv"
    whole.write_bytes(header)  # a header and no row yet: nothing to cut
    assert recover_output(whole, columns).torn_bytes == 0 and whole.read_bytes() == header
