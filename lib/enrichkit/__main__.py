"""`python -m enrichkit`: the same command as `scripts/enrich.py` (the dashboard starts runs this way)."""

from __future__ import annotations

import sys

from enrichkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
