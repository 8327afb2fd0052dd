#!/usr/bin/env python3
"""Watch and steer enrichkit jobs from outside: status, list, stats, validate, missing, export, cancel, serve."""

from __future__ import annotations

from _bootstrap import use_project_python

use_project_python(__file__)

from enrichkit.edge import jobs_entry  # noqa: E402 - after the path and interpreter are settled

if __name__ == "__main__":
    jobs_entry()
