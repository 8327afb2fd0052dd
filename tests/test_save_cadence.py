"""When the job store writes a checkpoint, as a pure rule on a fake clock: every --checkpoint-interval records but
at least 1 s apart, never more than ~5 % of the time, and at least every 10 s while anything is new."""

from __future__ import annotations

from enrichkit.store.cadence import SaveCadence
from enrichkit.testing import FakeClock


def _counted(cadence: SaveCadence, n: int) -> None:
    for _ in range(n):
        cadence.counted()


def test_a_checkpoint_is_due_after_the_interval_but_not_within_a_second_of_the_last() -> None:
    clock = FakeClock()
    cadence = SaveCadence(10, clock)
    _counted(cadence, 9)
    clock.advance(5)
    assert not cadence.due()  # 9 of 10 records, 5 s: not yet
    cadence.counted()
    assert cadence.due()
    cadence.saved(clock())
    _counted(cadence, 10)
    clock.advance(0.5)
    assert not cadence.due()  # the interval is reached, but the last one was half a second ago
    clock.advance(0.5)
    assert cadence.due()


def test_slow_checkpoints_are_spaced_to_a_twentieth_of_the_time() -> None:
    clock = FakeClock()
    cadence = SaveCadence(1, clock)
    started = clock()
    clock.advance(0.5)  # a checkpoint that took half a second
    cadence.saved(started)
    cadence.counted()
    clock.advance(9)
    assert not cadence.due()  # 20 x 0.5 s = 10 s apart
    clock.advance(1)
    assert cadence.due()


def test_anything_new_is_saved_within_ten_seconds_and_nothing_new_never_is() -> None:
    clock = FakeClock()
    cadence = SaveCadence(1000, clock)
    clock.advance(60)
    assert not cadence.due()  # nothing new
    cadence.counted()
    assert cadence.due()  # one record, 60 s after the last checkpoint
