"""--max-cost at the hand-over: each paid call reserves its worst case before it goes (`enrichkit.pace.budget`), so
records may be handed out freely; once a call's worst case did not fit what is left, none is, and the run stops."""

from __future__ import annotations

from enrichkit.pace.budget import Budget
from enrichkit.run.stopping import StopSignal


class BudgetGate:
    def __init__(self, budget: Budget | None, stop: StopSignal) -> None:
        self.budget = budget
        self.stop = stop
        self.hit = False  # the budget stopped the run

    def open(self) -> bool:
        """May a record be handed out? Asked only when there is one to hand out."""
        if self.budget is None or not self.budget.exhausted:
            return True
        self._stop()
        return False

    def check(self) -> None:
        """After results came back: a refused call's record came back pending, so take no more."""
        if self.budget is not None and self.budget.exhausted:
            self._stop()

    def settled(self) -> bool:
        """At the end: did the budget stop the run (or refuse a call that would have gone on)?"""
        if self.budget is not None and self.budget.exhausted:
            self.hit = True
        return self.hit

    def _stop(self) -> None:
        if not self.hit:
            self.hit = True
            self.stop.request("budget")
