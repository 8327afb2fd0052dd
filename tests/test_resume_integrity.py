"""What a resume verifies: the output's rows are the truth (any edit before the checkpoint's mark is seen),
a checkpoint belongs to one job, and an output re-saved by Excel is still the same job's."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable

import pytest

from conftest import Workspace, exactly_once, expected_ids, make_rows, read_json, write_csv


@pytest.fixture
def ws(fws: Workspace) -> Workspace:
    """This file's runs answer from the fake provider on a fake clock (no stand-in; `sws` where the stand-in's
    own counts are the point)."""
    return fws


def _fast(ws: Workspace) -> dict[str, str]:
    return ws.env(ENRICHKIT_BACKOFF_BASE="0.01")


def test_rows_deleted_near_the_top_are_redone_on_resume(ws: Workspace) -> None:
    assert ws.run("--limit", "20").returncode == 1
    lines = ws.output.read_bytes().splitlines(keepends=True)
    gone = [line.split(b",")[-2].decode() for line in lines[2:5]]
    ws.output.write_bytes(b"".join(lines[:2] + lines[5:]))  # three rows near the top, deleted by hand
    proc = ws.run("--resume")
    assert proc.returncode == 0, proc.stderr
    assert "3 record(s) the checkpoint lists as done are not in" in proc.stderr
    exactly_once(ws)
    assert set(gone) <= set(ws.output_ids())
    # The deleted rows were redone from the response cache: nothing was paid twice.
    assert ws.fake.stats()["generate"] == 40
    assert read_json(ws.report)["this_run"]["cache_hits"] == 3


def test_a_row_edited_before_the_mark_makes_the_resume_read_the_output_whole(ws: Workspace) -> None:
    assert ws.run("--limit", "10").returncode == 1
    text = ws.output.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    title = lines[1].split(",")[0]
    ws.output.write_text(lines[0] + lines[1].replace(title, title[:-1] + "X", 1) + "".join(lines[2:]),
                         encoding="utf-8")
    proc = ws.run("--resume")
    assert proc.returncode == 0, proc.stderr
    assert "read it whole" in proc.stderr
    assert len(ws.output_ids()) == len(set(ws.output_ids())) == 40


def test_a_checkpoint_copied_from_another_job_is_refused(ws: Workspace) -> None:
    assert ws.run("--limit", "15").returncode == 1
    other = ws.tmp / "other" / "enriched.csv"
    other.parent.mkdir()
    shutil.copy(ws.checkpoint, other.with_name("enriched.progress.json"))
    proc = ws.run("--resume", "--output", str(other))
    assert proc.returncode == 2, proc.stderr
    assert str(ws.output.resolve()) in proc.stderr and str(other) in proc.stderr
    assert "belongs to the job writing" in proc.stderr
    assert not other.exists()  # nothing was written for the refused job


def test_a_checkpoint_shared_by_two_jobs_is_refused_for_the_second(ws: Workspace) -> None:
    shared = ws.tmp / "shared.progress.json"
    assert ws.run("--checkpoint", str(shared), "--limit", "5").returncode == 1
    second = ws.tmp / "second.csv"
    write_csv(ws.tmp / "second-input.csv", make_rows(100))
    proc = ws.run("--checkpoint", str(shared), "--output", str(second), "--input", str(ws.tmp / "second-input.csv"),
                  "--resume")
    assert proc.returncode == 2, proc.stderr
    assert "belongs to the job writing" in proc.stderr
    assert read_json(shared)["output"] == str(ws.output.resolve())  # the first job's checkpoint is untouched


def test_an_output_whose_rows_belong_to_another_job_is_refused(ws: Workspace) -> None:
    assert ws.run("--limit", "10").returncode == 1
    cp = read_json(ws.checkpoint)
    body = ws.output.read_text(encoding="utf-8").replace(cp["job_id"], "enrich_20260101_000000_aaaaaa")
    ws.output.write_text(body, encoding="utf-8")
    proc = ws.run("--resume")
    assert proc.returncode == 2, proc.stderr
    assert "holds rows of job enrich_20260101_000000_aaaaaa" in proc.stderr


def test_an_input_that_is_another_file_is_refused(ws: Workspace) -> None:
    assert ws.run("--limit", "10").returncode == 1
    elsewhere = write_csv(ws.tmp / "elsewhere.csv", make_rows(40))
    proc = ws.run("--resume", "--input", str(elsewhere))
    assert proc.returncode == 2, proc.stderr
    assert "is of a job reading" in proc.stderr and "elsewhere.csv" in proc.stderr


def test_an_output_re_saved_by_excel_is_the_same_job(ws: Workspace) -> None:
    assert ws.run("--limit", "10").returncode == 1
    text = ws.output.read_text(encoding="utf-8")
    ws.output.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))  # UTF-8 BOM + CRLF
    proc = ws.run("--resume")
    assert proc.returncode == 0, proc.stderr
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) == 40
    assert ws.fake.stats()["generate"] == 40  # the ten rows Excel re-saved were not paid again


def test_fresh_says_what_it_deletes(ws: Workspace) -> None:
    assert ws.run("--limit", "7").returncode == 1
    again = ws.run()
    assert again.returncode == 2
    assert "delete it and its 7 paid rows with --fresh" in again.stderr
    refused = ws.run("--fresh")  # not on a terminal, no --yes
    assert refused.returncode == 2 and "7 paid rows" in refused.stderr and "--yes" in refused.stderr
    assert len(ws.output_ids()) == 7  # nothing was deleted
    assert ws.run("--fresh", "--yes").returncode == 0
    assert len(ws.output_ids()) == 40


def test_a_bare_resume_continues_with_the_recorded_options(sws: Workspace) -> None:
    first = sws.run("--limit", "5", "--model", "gemini-2.5-flash-lite", "--max-workers", "3", "--rpm", "6000")
    assert first.returncode == 1, first.stderr
    options = read_json(sws.checkpoint)["options"]
    assert (options["model"], options["max_workers"], options["rpm"]) == ("gemini-2.5-flash-lite", 3, 6000.0)
    resumed = sws.run("--resume", "--max-workers", "4")
    assert resumed.returncode == 0, resumed.stderr
    assert "--max-workers 4 given: overrides the job's recorded 3" in resumed.stderr
    assert set(sws.fake.stats()["by_model"]) == {"gemini-2.5-flash-lite"}  # the model stayed
    assert read_json(sws.checkpoint)["options"]["max_workers"] == 4


def test_the_same_stages_file_given_again_by_a_relative_path_is_no_override(ws: Workspace) -> None:
    args = ("--input", "input.csv", "--output", "out/enriched.csv", "--stages-file", "stages.toml")
    assert ws.run(*args, "--limit", "5", base=False).returncode == 1  # records left
    resumed = ws.run(*args, "--resume", base=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "overrides" not in resumed.stderr


def test_a_corrupt_checkpoint_says_how_to_rebuild_the_job_from_the_output_without_paying_twice(ws: Workspace) -> None:
    assert ws.run("--limit", "5").returncode == 1  # records left
    ws.checkpoint.write_text('{"version": 1, "job_id": ', encoding="utf-8")  # a hand edit gone wrong
    refused = ws.run("--resume")
    assert refused.returncode == 2 and "corrupt checkpoint" in refused.stderr, refused.stderr
    assert "move it aside" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    ws.checkpoint.rename(ws.tmp / "broken.json")  # as the message says
    sent = ws.fake.stats()["generate"]
    assert ws.run("--resume").returncode == 0
    assert ws.fake.stats()["generate"] == sent + 35  # the 5 rows in the output were not paid again
    exactly_once(ws)


def test_a_resume_that_changes_the_model_needs_allow_config_change(sws: Workspace) -> None:
    assert sws.run("--limit", "5").returncode == 1
    proc = sws.run("--resume", "--model", "gemini-2.5-flash-lite")
    assert proc.returncode == 2 and "--allow-config-change" in proc.stderr
    ok = sws.run("--resume", "--model", "gemini-2.5-flash-lite", "--allow-config-change")
    assert ok.returncode == 0, ok.stderr
    assert sws.fake.stats()["by_model"]["gemini-2.5-flash-lite"] == 35


def test_the_report_covers_the_whole_job(ws: Workspace) -> None:
    assert ws.run("--limit", "10").returncode == 1
    assert ws.run("--resume").returncode == 0
    report = json.loads(ws.report.read_text())
    assert report["counts"]["completed"] == 40 and report["counts"]["completed_this_run"] == 30
    assert report["stages"]["poc"]["succeeded"] == 40  # over every run, not just the last
    assert report["this_run"]["stages"]["poc"]["succeeded"] == 30
    assert report["fill_rates"]["poc_name"] == 1.0 and report["runs"] == 2


def test_an_output_re_saved_in_a_windows_code_page_is_refused_not_appended_to(ws: Workspace) -> None:
    rows = make_rows(40)
    rows[3]["poc.last_name"] = "Schäfer"
    write_csv(ws.input, rows)
    assert ws.run("--limit", "10").returncode == 1
    text = ws.output.read_text(encoding="utf-8")
    ws.output.write_bytes(text.replace("\n", "\r\n").encode("cp1252"))  # Excel's "CSV (Comma delimited)"
    before = ws.output.read_bytes()
    proc = ws.run("--resume")
    assert proc.returncode == 2, proc.stderr
    assert "is not UTF-8" in proc.stderr and "CSV UTF-8" in proc.stderr
    assert ws.output.read_bytes() == before  # nothing appended to a file in another encoding


def test_a_row_copied_by_hand_stops_the_resume_naming_its_line(ws: Workspace) -> None:
    assert ws.run("--limit", "10").returncode == 1
    lines = ws.output.read_bytes().splitlines(keepends=True)
    ws.output.write_bytes(b"".join([*lines[:6], lines[2], *lines[6:]]))  # row 2 pasted again as line 7
    proc = ws.run("--resume")
    assert proc.returncode == 2, proc.stderr  # never "Done" over an output `jobs.py validate` rejects
    assert "holds 1 row(s) of a record that is already in it (lines 7" in proc.stderr
    ws.output.write_bytes(b"".join(lines))  # the user removes the copy
    assert ws.run("--resume").returncode == 0
    assert len(ws.output_ids()) == len(set(ws.output_ids())) == 40


def test_id_columns_cannot_change_within_a_job(ws: Workspace) -> None:
    assert ws.run("--limit", "10").returncode == 1
    proc = ws.run("--resume", "--id-columns", "fund.title", "--allow-config-change")
    assert proc.returncode == 2 and "--id-columns cannot change within a job" in proc.stderr


def test_an_enrichkit_output_given_as_input_is_refused_clearly(ws: Workspace) -> None:
    assert ws.run("--limit", "5").returncode == 1
    proc = ws.run("--input", str(ws.output), "--output", str(ws.tmp / "again.csv"))
    assert proc.returncode == 2 and "columns enrichkit adds to its output" in proc.stderr


def test_the_webhook_url_is_not_recorded_in_the_checkpoint() -> None:
    from enrichkit.config.plan import RunOptions

    recorded = RunOptions(input="in.csv", output="out.csv", notify_url="https://hooks.example/secret-path").recorded()
    assert "notify_url" not in recorded and "secret-path" not in str(recorded)


def test_a_resume_mark_past_records_never_done_heals_in_the_same_run(ws: Workspace) -> None:
    """A checkpoint whose resume mark stands after records that were never done (restored from a backup,
    edited): the run that finds nothing left after the mark reads the input again from the top and does them."""
    assert ws.run("--limit", "10").returncode == 1
    cp = read_json(ws.checkpoint)
    cp["resume_at"] = {"offset": ws.input.stat().st_size, "row": 40}
    ws.checkpoint.write_text(json.dumps(cp), encoding="utf-8")
    first = ws.run("--resume")
    assert first.returncode == 0 and "Done: all 40 records" in first.stderr, first.stderr
    exactly_once(ws)


def _fixed_width_rows(n: int) -> list[dict[str, str]]:
    """Rows all of one length: a byte offset that ends a row in one order ends a row in any other."""
    return [{"fund.title": f"Fund {i:05d}", "fund.manager": f"Manager {i:02d}", "poc.first_name": f"First{i:02d}",
             "poc.last_name": f"Last{i:02d}", "poc.email": f"p{i:02d}@m{i:02d}.example.com"} for i in range(n)]


def test_an_input_resorted_with_its_size_and_mtime_kept_is_finished_not_called_done(ws: Workspace) -> None:
    """`sort` then `touch -r` (or `cp -p` of a re-sorted copy, `rsync -t`): the checkpoint cannot see the change, and
    the records now before its resume mark were skipped; the run ended "20 done, 20 not yet tried" with exit 0."""
    rows = _fixed_width_rows(40)
    write_csv(ws.input, rows)
    assert ws.run("--limit", "20", "--max-workers", "1").returncode == 1
    before = ws.input.stat()
    write_csv(ws.input, rows[::-1])  # the same bytes per row, in the other order
    os.utime(ws.input, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert ws.input.stat().st_size == before.st_size
    proc = ws.run("--resume")
    assert proc.returncode == 0, proc.stderr
    assert "Done: all 40 records" in proc.stderr and "40/40 done" in proc.stderr
    exactly_once(ws)
    assert ws.run("--resume").returncode == 0 and len(ws.output_ids()) == 40


def test_a_shrunk_input_never_shows_more_done_than_its_total(ws: Workspace) -> None:
    assert ws.run().returncode == 0
    write_csv(ws.input, make_rows(10, start=35))  # 5 records the output has, 5 new; 35 gone from the input
    proc = ws.run("--resume")
    assert proc.returncode == 0, proc.stderr
    shown = [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+) done", proc.stderr)]
    assert all(done <= total for done, total in shown), proc.stderr  # not "45/10 done"
    assert "45 done (the input holds 10 records now)" in proc.stderr


def _edit_completed_ids(ws: Workspace, edit: Callable[[list[str]], list[str]]) -> None:
    """Rewrite the checkpoint's completed_ids by hand, as bit rot or a stray keystroke would: same count."""
    raw = ws.checkpoint.read_text(encoding="utf-8")
    head, _, rest = raw.partition('"completed_ids": [')
    ids_text, _, tail = rest.partition("]")
    ids = [x.strip().strip('"') for x in ids_text.split(",") if x.strip()]
    edited = edit(ids)
    assert len(edited) == len(ids) and edited != ids
    ws.checkpoint.write_text(head + '"completed_ids": [' + ", ".join(f'"{x}"' for x in edited) + "]" + tail,
                             encoding="utf-8")


def test_a_flipped_digit_in_completed_ids_is_caught_by_the_digest(ws: Workspace) -> None:
    assert ws.run("--limit", "20").returncode == 1

    def flip(ids: list[str]) -> list[str]:
        first = ids[0]
        return [first[:-1] + ("0" if first[-1] != "0" else "1"), *ids[1:]]

    _edit_completed_ids(ws, flip)
    write_csv(ws.input, make_rows(45))  # five rows added: this run reads the input from the top
    proc = ws.run("--resume")
    assert proc.returncode == 0 and "Done: all 45 records" in proc.stderr, proc.stderr
    exactly_once(ws)  # the record whose ID was mangled is not written a second time
    assert ws.fake.stats()["generate"] == 45


def test_a_done_id_swapped_for_a_pending_one_is_caught_by_the_digest(ws: Workspace) -> None:
    assert ws.run("--limit", "20").returncode == 1
    pending = sorted(expected_ids(ws) - set(ws.output_ids()))[0]
    _edit_completed_ids(ws, lambda ids: [pending, *ids[1:]])
    proc = ws.run("--resume")
    assert proc.returncode == 0 and "Done: all 40 records" in proc.stderr, proc.stderr
    exactly_once(ws)  # the swapped-in record done once, the swapped-out one not written twice
