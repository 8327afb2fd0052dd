"""When the job store writes a checkpoint, as a pure rule on a fake clock: every --checkpoint-interval records but
at least 1 s apart, never more than ~5 % of the time, and at least every 10 s while anything is new. The cadence
reads the run's count of records written or failed (`done`)."""

from __future__ import annotations

from enrichkit.store.cadence import SaveCadence
from enrichkit.testing import FakeClock


def test_a_checkpoint_is_due_after_the_interval_but_not_within_a_second_of_the_last() -> None:
    clock = FakeClock()
    cadence = SaveCadence(10, clock)
    clock.advance(5)
    assert not cadence.due(9)  # 9 of 10 records, 5 s: not yet
    assert cadence.due(10)
    cadence.saved(clock(), 10)
    clock.advance(0.5)
    assert not cadence.due(20)  # the interval is reached, but the last one was half a second ago
    clock.advance(0.5)
    assert cadence.due(20)
    assert not cadence.due(19)  # 9 since the last checkpoint: the count goes on from it


def test_slow_checkpoints_are_spaced_to_a_twentieth_of_the_time() -> None:
    clock = FakeClock()
    cadence = SaveCadence(1, clock)
    started = clock()
    clock.advance(0.5)  # a checkpoint that took half a second
    cadence.saved(started, 0)
    clock.advance(9)
    assert not cadence.due(1)  # 20 x 0.5 s = 10 s apart
    clock.advance(1)
    assert cadence.due(1)


def test_anything_new_is_saved_within_ten_seconds_and_nothing_new_never_is() -> None:
    clock = FakeClock()
    cadence = SaveCadence(1000, clock)
    clock.advance(60)
    assert not cadence.due(0)  # nothing new
    assert cadence.due(1)  # one record, 60 s after the last checkpoint
    cadence.saved(clock(), 1)
    clock.advance(60)
    assert not cadence.due(1)  # nothing new since that checkpoint
