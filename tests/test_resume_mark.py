"""The resume mark's rules, as a pure thing: what a walk reads, where the mark is, when it moves, when a walk
starts from the top, and what survives the start."""

from __future__ import annotations

from enrichkit.config.plan import JobMode
from enrichkit.store.resumemark import ResumeMark, Walk

MARK = {"offset": 500, "row": 20}


def test_a_resume_with_known_counts_starts_at_the_recorded_mark() -> None:
    mark = ResumeMark(JobMode.RESUME, MARK, counts_known=True)
    assert not mark.must_count
    assert mark.walk() == Walk((500, 20), count_input=False)


def test_a_new_job_or_unknown_counts_count_the_input_from_the_top() -> None:
    assert ResumeMark(JobMode.NEW, None, counts_known=True).walk() == Walk(None, count_input=True)
    unknown = ResumeMark(JobMode.RESUME, MARK, counts_known=False)
    assert unknown.must_count and unknown.walk() == Walk(None, count_input=True)


def test_retry_failed_walks_from_the_top_and_never_moves_the_mark() -> None:
    mark = ResumeMark(JobMode.RETRY_FAILED, MARK, counts_known=True)
    assert mark.walk() == Walk(None, count_input=False)
    assert not mark.moves(output_whole=True)


def test_the_mark_stays_before_the_first_record_not_yet_finished() -> None:
    mark = ResumeMark(JobMode.RESUME, MARK, counts_known=True)
    mark.walk()
    mark.opened("a", (600, 21))
    mark.opened("b", (700, 22))
    assert mark.at((900, 25)) == {"offset": 600, "row": 21}
    mark.closed("a")
    assert mark.at((900, 25)) == {"offset": 700, "row": 22}
    mark.closed("b")
    assert mark.at((900, 25)) == {"offset": 900, "row": 25}  # everything back: after the last row read


def test_the_top_is_no_mark() -> None:
    mark = ResumeMark(JobMode.NEW, None, counts_known=False)
    assert mark.at((0, 0)) is None
    assert mark.at(None) is None


def test_the_mark_does_not_move_while_the_output_cannot_take_rows() -> None:
    mark = ResumeMark(JobMode.RESUME, MARK, counts_known=True)
    assert mark.moves(output_whole=True)
    assert not mark.moves(output_whole=False)


def test_records_missing_before_the_mark_send_the_walk_back_to_the_top() -> None:
    mark = ResumeMark(JobMode.RESUME, MARK, counts_known=True)
    mark.walk()
    assert mark.walk_again(cut_short=False, missing=False) is None  # nothing missing: the walk is done
    assert mark.walk_again(cut_short=True, missing=True) is None  # a stop or --limit: not this run
    assert mark.walk_again(cut_short=False, missing=True) == Walk(None, count_input=True)
    assert mark.at((900, 25)) is None  # a crash meanwhile: the next run reads from the top too
    assert mark.walk_again(cut_short=False, missing=True) is None  # the walk from the top is the last


def test_a_walk_from_the_top_never_walks_again() -> None:
    mark = ResumeMark(JobMode.NEW, None, counts_known=False)
    mark.walk()
    assert mark.walk_again(cut_short=False, missing=True) is None


def test_a_run_that_ends_with_records_missing_before_its_mark_leaves_no_mark() -> None:
    mark = ResumeMark(JobMode.RESUME, MARK, counts_known=True)
    mark.walk()
    mark.walk_ended(whole=False, reached_end=True, missing=True)
    assert mark.at((900, 25)) is None


def test_a_whole_walk_from_the_top_restores_the_mark() -> None:
    mark = ResumeMark(JobMode.RESUME, MARK, counts_known=True)
    mark.walk()
    mark.walk_again(cut_short=False, missing=True)
    mark.walk_ended(whole=True, reached_end=True, missing=False)
    assert mark.at((900, 25)) == {"offset": 900, "row": 25}


def test_a_walk_that_did_not_reach_the_end_keeps_the_mark() -> None:
    mark = ResumeMark(JobMode.RESUME, MARK, counts_known=True)
    mark.walk()
    mark.walk_ended(whole=False, reached_end=False, missing=True)
    assert mark.at((900, 25)) == {"offset": 900, "row": 25}


def test_the_recorded_mark_survives_the_start_only_when_input_and_output_are_as_recorded() -> None:
    assert ResumeMark.kept_at_open(input_changed=False, rows_lost=False, lists_trusted=True)
    assert not ResumeMark.kept_at_open(input_changed=True, rows_lost=False, lists_trusted=True)
    assert not ResumeMark.kept_at_open(input_changed=False, rows_lost=True, lists_trusted=True)
    assert not ResumeMark.kept_at_open(input_changed=False, rows_lost=False, lists_trusted=False)
