"""The main job through the real CLI, the real google-genai SDK and the stand-in on 127.0.0.1."""

from __future__ import annotations

import json

from conftest import COLUMNS, Workspace, expected_ids, read_csv, read_json, write_csv


def test_run_enriches_every_record_once_with_lineage(ws: Workspace) -> None:
    proc = ws.run("--max-workers", "8")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(ws.output)
    assert list(rows[0]) == [*COLUMNS, "poc_name", "poc_email", "confidence", "email_domain", "_cost_usd",
                             "_record_id", "_job_id"]
    assert {r["_record_id"] for r in rows} == expected_ids(ws)
    assert len(rows) == 40
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "completed"
    assert cp["completed_count"] == 40 and cp["failed_count"] == 0
    assert {r["_job_id"] for r in rows} == {cp["job_id"]}
    assert sorted(cp["completed_ids"]) == sorted(r["_record_id"] for r in rows)
    for row in rows:
        assert row["poc_name"] and "@" in row["poc_email"]
        assert row["email_domain"] == row["poc_email"].split("@")[1].lower()
        float(row["confidence"])
    assert cp["requests"] == 40 == ws.fake.stats()["generate"]
    assert cp["total_tokens"] == cp["prompt_tokens"] + cp["output_tokens"] > 0
    assert cp["cost_usd"] > 0
    assert "Done: all 40 records enriched." in proc.stderr


def test_report_has_counts_stages_latency_and_fill_rates(ws: Workspace) -> None:
    write_csv(ws.input, [*[r for r in read_csv(ws.input)], read_csv(ws.input)[0]])  # one duplicate row
    assert ws.run().returncode == 0
    report = read_json(ws.report)
    assert report["counts"]["total"] == 40
    assert report["counts"]["completed"] == 40
    assert report["counts"]["skipped_duplicates"] == 1
    assert report["status"] == "completed" and report["exit_code"] == 0
    assert report["stages"]["poc"]["succeeded"] == 40
    assert report["stages"]["poc"]["latency_ms"]["p50"] is not None
    assert report["fill_rates"]["poc_name"] == 1.0
    assert report["tokens"]["total"] > 0 and report["requests"] == 40


def test_second_run_is_refused_without_resume_and_resume_of_done_job_exits_zero(ws: Workspace) -> None:
    assert ws.run().returncode == 0
    again = ws.run()
    assert again.returncode == 2
    assert "--resume" in again.stderr and "--fresh" in again.stderr
    resumed = ws.run("--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert len(read_csv(ws.output)) == 40
    assert ws.fake.stats()["generate"] == 40  # nothing asked twice


def test_fresh_with_yes_starts_over(ws: Workspace) -> None:
    assert ws.run().returncode == 0
    first_job = read_json(ws.checkpoint)["job_id"]
    proc = ws.run("--fresh", "--yes")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(ws.output)
    assert len(rows) == 40 and {r["_job_id"] for r in rows} != {first_job}


def test_fresh_without_yes_off_a_terminal_deletes_nothing(ws: Workspace) -> None:
    assert ws.run().returncode == 0
    proc = ws.run("--fresh")
    assert proc.returncode == 2 and "--yes" in proc.stderr
    assert len(read_csv(ws.output)) == 40


def test_jsonl_input_and_id_columns(ws: Workspace) -> None:
    ws.input = ws.tmp / "input.jsonl"
    lines = [json.dumps({"fund.title": f"F{i}", "fund.manager": "M", "poc.first_name": "A", "poc.last_name": "B",
                         "poc.email": f"x{i}@y.com", "size": i}) for i in range(10)]
    lines.append(json.dumps({"fund.title": "F0", "fund.manager": "other", "poc.first_name": "A",
                             "poc.last_name": "B", "poc.email": "z@y.com", "size": 99}))
    ws.input.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = ws.run("--id-columns", "fund.title")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(ws.output)
    assert len(rows) == 10  # F0 twice by --id-columns: processed once, counted as a duplicate
    assert read_json(ws.report)["counts"]["skipped_duplicates"] == 1
    assert rows[0]["size"] in {str(i) for i in range(10)}


def test_xlsx_input(ws: Workspace) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    sheet = wb.active
    sheet.append(COLUMNS)
    for i in range(5):
        sheet.append([f"Fund {i}", "Mgr", "A", "B", f"a{i}@b.org"])
    ws.input = ws.tmp / "input.xlsx"
    wb.save(ws.input)
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(ws.output)
    assert len(rows) == 5
    assert {r["fund.title"] for r in rows} == {f"Fund {i}" for i in range(5)}


def test_limit_processes_at_most_n_then_resume_finishes(ws: Workspace) -> None:
    proc = ws.run("--limit", "15")
    assert proc.returncode == 1, proc.stderr
    assert len(read_csv(ws.output)) == 15
    assert read_json(ws.checkpoint)["status"] == "interrupted"
    assert "--resume" in proc.stderr
    assert ws.run("--resume").returncode == 0
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))


def test_a_limit_stop_with_records_left_never_exits_0(ws: Workspace) -> None:
    """Exit 0 says every record is done (cron advice removes the line on it): a --limit stop with records left
    exits 1, resumable; a --limit that covers every record left exits 0."""
    proc = ws.run("--limit", "30")
    assert proc.returncode == 1, proc.stderr
    assert "Stopped after --limit 30: 30 done, 10 left. Run with --resume to continue." in proc.stderr
    cp = read_json(ws.checkpoint)
    assert (cp["status"], cp["stop_reason"]) == ("interrupted", "limit")
    done = ws.run("--resume", "--limit", "10")
    assert done.returncode == 0, done.stderr
    assert "Done: all 40 records enriched." in done.stderr
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))


def test_dry_run_calls_and_writes_nothing(ws: Workspace) -> None:
    proc = ws.run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "first prompt (poc, gemini-2.5-flash, row 1)" in proc.stdout
    assert "Who is the point of contact of Fund 00000" in proc.stdout
    assert "estimate for 40 records" in proc.stdout
    assert ws.fake.stats()["generate"] == 0
    assert not ws.output.parent.exists()


def test_a_stage_s_own_rpm_is_the_pace_the_dry_run_and_the_start_line_state(ws: Workspace) -> None:
    stages = ws.stages.read_text(encoding="utf-8")
    ws.stages.write_text(stages.replace("[stages.fields]\npoc_name", "rpm = 120\n[stages.fields]\npoc_name"),
                         encoding="utf-8")
    dry = ws.run("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "bound by rpm / 60" in dry.stdout and "rpm / 60 = 2.00" in dry.stdout
    proc = ws.run("--limit", "2")
    assert proc.returncode == 1, proc.stderr
    assert "10 workers, rpm 120; stages:" in proc.stderr
    assert read_json(ws.checkpoint)["pace"]["gemini-2.5-flash"]["rpm"] == 120


def test_formula_like_enriched_values_are_neutralised(ws: Workspace, tmp_path: object) -> None:
    ws.stages.write_text("""
[[stages]]
name = "f"
type = "python"
function = "formula_stage:evil"
[stages.fields]
evil = "string"
number = "string"
""", encoding="utf-8")
    (ws.tmp / "formula_stage.py").write_text(
        "def evil(record):\n    return {'evil': '=HYPERLINK(\"http://x\")', 'number': '-12.5'}\n", encoding="utf-8")
    proc = ws.run(env=ws.env(PYTHONPATH=str(ws.tmp)))
    assert proc.returncode == 0, proc.stderr
    row = read_csv(ws.output)[0]
    assert row["evil"] == "'=HYPERLINK(\"http://x\")"
    assert row["number"] == "-12.5"  # a plain number is not a formula
