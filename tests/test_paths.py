"""Every path a job writes differs from the input and from each other (also through links), and is checked
before any file is touched: exit 2, one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import Workspace


@pytest.fixture
def ws(fws: Workspace) -> Workspace:
    """This file's runs answer from the fake provider on a fake clock (no stand-in; `sws` where the stand-in's
    own counts are the point)."""
    return fws


def _refused(ws: Workspace, *args: str, needles: tuple[str, ...]) -> None:
    before = {p: p.read_bytes() for p in ws.tmp.rglob("*") if p.is_file()}
    proc = ws.run(*args)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    after = {p: p.read_bytes() for p in ws.tmp.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing replaced, nothing deleted
    assert ws.fake.stats()["generate"] == 0


@pytest.mark.parametrize(("flag", "other"), [
    ("--report", "--output"), ("--checkpoint", "--output"), ("--errors", "--output"),
    ("--report", "--input"), ("--errors", "--input"), ("--checkpoint", "--input"),
])
def test_a_written_path_equal_to_the_output_or_the_input_is_refused(ws: Workspace, flag: str, other: str) -> None:
    ws.output.parent.mkdir(parents=True)
    ws.output.write_text("", encoding="utf-8")
    target = ws.output if other == "--output" else ws.input
    _refused(ws, flag, str(target), needles=(flag, other, "same file"))


@pytest.mark.parametrize("flag", ["--checkpoint", "--report", "--errors"])
def test_a_written_path_equal_to_the_stages_file_is_refused_even_with_fresh_yes(ws: Workspace, flag: str) -> None:
    _refused(ws, flag, str(ws.stages), "--fresh", "--yes", needles=(flag, "--stages-file", "same file"))


def test_fresh_never_deletes_a_given_checkpoint_that_is_no_checkpoint(ws: Workspace) -> None:
    notes = ws.tmp / "notes.json"
    notes.write_text('{"mine": "not enrichkit\'s"}', encoding="utf-8")
    proc = ws.run("--checkpoint", str(notes), "--fresh", "--yes")
    assert proc.returncode == 2 and "not an enrichkit checkpoint" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert notes.read_text(encoding="utf-8") == '{"mine": "not enrichkit\'s"}'
    assert ws.fake.stats()["generate"] == 0 and not ws.output.exists()


def test_an_output_that_is_a_file_of_the_users_is_never_deleted_even_with_fresh_yes(ws: Workspace) -> None:
    ws.output.parent.mkdir(parents=True)
    ws.output.write_text("name,city\nAda,London\n", encoding="utf-8")  # not an enrichkit output: no _record_id
    for extra in ([], ["--resume"], ["--fresh", "--yes"]):
        proc = ws.run(*extra)
        assert proc.returncode == 2 and "not an enrichkit output" in proc.stderr, (extra, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert ws.output.read_text(encoding="utf-8") == "name,city\nAda,London\n"
    assert ws.fake.stats()["generate"] == 0


def test_two_written_paths_equal_to_each_other_are_refused(ws: Workspace) -> None:
    same = str(ws.tmp / "same.json")
    _refused(ws, "--report", same, "--checkpoint", same, needles=("--checkpoint", "--report"))


def test_a_symlink_to_the_input_is_the_input(ws: Workspace) -> None:
    link = ws.tmp / "report-link.json"
    link.symlink_to(ws.input)
    _refused(ws, "--report", str(link), needles=("--input", "--report"))


def test_a_hard_link_to_the_input_is_the_input(ws: Workspace) -> None:
    link = ws.tmp / "errors-link.jsonl"
    os.link(ws.input, link)
    _refused(ws, "--errors", str(link), needles=("--input", "--errors"))


def test_an_output_that_is_the_input_is_refused(ws: Workspace) -> None:
    _refused(ws, "--output", str(ws.input), needles=("--input", "--output"))


def test_a_checkpoint_in_a_missing_folder_is_refused_before_anything_is_written(ws: Workspace) -> None:
    _refused(ws, "--checkpoint", str(ws.tmp / "nope" / "cp.json"), needles=("--checkpoint", "does not exist"))
    assert not ws.output.exists()


def test_an_input_path_that_is_not_utf8_is_refused(ws: Workspace) -> None:
    raw = os.fsencode(ws.tmp) + b"/caf\xe9.csv"
    with open(raw, "wb") as f:
        f.write(ws.input.read_bytes())
    name = os.fsdecode(raw)  # a str with a lone surrogate, as Python hands it over from argv
    _refused(ws, "--input", name, needles=("--input", "not valid UTF-8"))


def test_a_folder_given_as_a_file_is_refused(ws: Workspace) -> None:
    (ws.tmp / "a-folder").mkdir()
    _refused(ws, "--report", str(ws.tmp / "a-folder"), needles=("--report", "is a folder"))


def test_the_default_paths_sit_beside_the_output(ws: Workspace) -> None:
    done = ws.run("--limit", "2")
    # Two records done, none failed, the rest left: exactly 1 (a --limit stop with records left), never 0.
    assert done.returncode == 1 and "Stopped after --limit 2" in done.stderr, done.stderr
    names = {p.name for p in ws.output.parent.iterdir()} - {"enriched.cache.sqlite-wal", "enriched.cache.sqlite-shm"}
    assert names == {"enriched.cache.sqlite", "enriched.csv", "enriched.errors.jsonl", "enriched.lock",
                     "enriched.progress.json", "enriched.report.json"}
    assert not list(Path(ws.output.parent).glob(".*.tmp"))


def test_the_locks_owner_file_is_one_of_the_jobs_files(ws: Workspace) -> None:
    _refused(ws, "--checkpoint", str(ws.output.with_name("enriched.lock.owner")), needles=("--checkpoint", "owner"))


def test_an_empty_output_or_a_base_url_that_is_no_url_is_a_usage_error(ws: Workspace) -> None:
    _refused(ws, "--output", "", needles=("--output",))
    _refused(ws, "--base-url", "htp//localhost:8765", needles=("--base-url",))
