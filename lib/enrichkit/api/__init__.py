"""The public Python API: `enrich(...)` and `Job(...)`, what `enrich.py` does, for a notebook or a pipeline.

    Job(input, output, stages=..., **options).run() -> RunResult
      options -> (the job's recorded ones on resume) -> plan -> open job (lock, providers, store)
        -> Pipeline.run() -> close (or leave what was abandoned on the wire) -> notify -> RunResult

The library side of the process edge: it registers the keys it reads as secrets, closes what it opened and
releases the lock, and never installs a signal handler, exits the process, writes `os.environ` or prints
(unless asked). The CLI (`enrichkit.cli`) is a thin layer over it: flags in, signals and the exit at the edge.

Here: `job` (`Job`, `enrich`), `result` (`RunResult`, `Event`, the figures as events), `options` (keyword
options checked into `RunOptions`), `seam` (the providers and clock `enrichkit.testing.use` installs).
"""

from __future__ import annotations

from enrichkit.api.job import Job, enrich
from enrichkit.api.result import Event, RunResult
from enrichkit.api.seam import installed

__all__ = ["Event", "Job", "RunResult", "enrich", "installed"]
