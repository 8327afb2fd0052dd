"""`python -m enrichkit`: the same command as `scripts/enrich.py` (the dashboard starts runs this way)."""

from __future__ import annotations

from enrichkit.cli import entry

if __name__ == "__main__":
    entry()
