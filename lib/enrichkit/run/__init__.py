"""One run: opening the job, the pipeline (the schedule) and its start line, budget gate, figures and closing, the
enricher, stopping, counters and stage totals, progress, outcome (the verdict), report, notify."""
