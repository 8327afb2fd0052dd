"""What finished records and failed attempts add to the figures: the job's (the checkpoint's totals, stage totals,
fill counts and failed IDs) and this run's (`RunTally`). Booked once, here, by the job store's main thread."""

from __future__ import annotations

from enrichkit.run.enricher import RecordResult
from enrichkit.run.report import RunTally
from enrichkit.store.checkpoint import Checkpoint


class Tally:
    def __init__(self, cp: Checkpoint, output_fields: list[str]) -> None:
        self.cp = cp
        self.run = RunTally()
        self._fields = output_fields

    def paid(self, r: RecordResult) -> None:
        """What a result's calls cost and did: the job's and the run's, whether or not its row is written."""
        self.run.counters.add(r.counters)
        self.cp.totals.add(r.counters)

    def committed(self, r: RecordResult) -> None:
        """A result the job store committed (its row written, or its failure recorded, or abandoned): everything it
        adds to the job's and the run's figures, booked in one go."""
        self.charged(r)
        if r.values is not None:
            self.written(r, r.values)
        elif r.failure is not None:
            self.failed(r, r.failure.error_type)
        self.run_stages(r)

    def charged(self, r: RecordResult) -> None:
        """A result about to be written or failed: its calls, and the job's stage figures (stages done, skipped, their
        cost)."""
        self.paid(r)
        self.cp.stage_totals.add_record(r.stage_latency, r.skipped_stages, r.stage_cost, None, None)

    def written(self, r: RecordResult, values: dict[str, str]) -> None:
        cp = self.cp
        cp.failed_ids.discard(r.record_id)
        self.run.completed += 1
        for name in self._fields:
            if values.get(name, "").strip():
                cp.filled[name] = cp.filled.get(name, 0) + 1

    def failed(self, r: RecordResult, error_type: str) -> None:
        self.cp.mark_failed(r.record_id)
        self.run.failed += 1
        self.cp.stage_totals.add_record([], [], {}, r.failed_stage, error_type)

    def run_stages(self, r: RecordResult) -> None:
        """The run's stage figures of a result that was committed (its call times sampled)."""
        run = self.run
        run.stages.add_record(r.stage_latency, r.skipped_stages, {}, r.failed_stage,
                              r.failure.error_type if r.failure is not None else None, sample=run.sample)

    def attempt_error(self, stage: str, error_type: str) -> None:
        """A failed attempt: the job's and the run's figures of its stage."""
        self.cp.stage_totals.add_attempt_error(stage, error_type)
        self.run.stages.add_attempt_error(stage, error_type)
