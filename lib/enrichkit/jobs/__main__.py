"""`python -m enrichkit.jobs`: the same command as `scripts/jobs.py` and `enrichkit-jobs`."""

from __future__ import annotations

import sys

from enrichkit.jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
