"""The job's files: job store, output, read-back, checkpoint, recovery, error log, cache, lock, IDs, paths."""
