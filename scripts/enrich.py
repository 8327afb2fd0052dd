#!/usr/bin/env python3
"""Enrich every record of a CSV/JSONL/XLSX file. See --help, and README.md."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from enrichkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
