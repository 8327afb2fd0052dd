"""The job tools (`scripts/jobs.py`) and the dashboard: a job looked at and steered from outside,
through the files it writes.

- `state`: a job's status from its checkpoint, checked against the live process; `continuing`: the command
  that continues it; `listing`: the jobs under a folder, a CHECKPOINT argument, totals; `control`: stopping a run;
- `audit`: the input and the output side by side (`validate`, `missing`), whole output rows;
- `export`: the output as CSV, JSONL or XLSX, typed, in output or input order;
- `views`: the text `jobs.py` prints; `cli`: its arguments and commands;
- `server`, `catalog`, `details`, `launch`, `dashboard.html`: the web page and JSON API of `jobs.py serve`.
"""

from __future__ import annotations
