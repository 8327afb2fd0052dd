#!/usr/bin/env python3
"""Watch and steer enrichkit jobs from outside: status, list, stats, validate, missing, export, cancel, serve."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from enrichkit.jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
