"""One run: opening the job, pipeline, enricher, stopping, figures, progress, outcome, report, notify."""
