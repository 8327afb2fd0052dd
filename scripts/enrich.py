#!/usr/bin/env python3
"""Enrich every record of a CSV/JSONL/XLSX file. See --help, README.md and docs/."""

from __future__ import annotations

from _bootstrap import use_project_python

use_project_python(__file__)

from enrichkit.cli import entry  # noqa: E402 - after the path and interpreter are settled

if __name__ == "__main__":
    entry()
