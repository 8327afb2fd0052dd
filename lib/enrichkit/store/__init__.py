"""The job's files: the job store (with its output rows, tally, save cadence and resume mark), output, read-back,
checkpoint, recovery, error log, cache, lock, IDs, paths."""
