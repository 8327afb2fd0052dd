"""enrichkit: enrich every record of a tabular file through LLM prompts, HTTP calls or Python functions.

The public surface is what `__all__` lists (documented in docs/python-api.md); every other module may move.

    import enrichkit
    result = enrichkit.enrich("funds.csv", "out/funds.csv", stages="stages.toml", resume=True)
"""

from __future__ import annotations

__version__ = "0.1.0"

from enrichkit.api import Event, Job, RunResult, enrich
from enrichkit.errors import (
    AuthError,
    BillingError,
    ConfigError,
    EnrichError,
    InputError,
    LockedError,
    OutageError,
    ProviderStop,
    QuotaExhausted,
    UsageError,
    WriteFailed,
)
from enrichkit.run.progress import Figures

__all__ = [
    "AuthError",
    "BillingError",
    "ConfigError",
    "EnrichError",
    "Event",
    "Figures",
    "InputError",
    "Job",
    "LockedError",
    "OutageError",
    "ProviderStop",
    "QuotaExhausted",
    "RunResult",
    "UsageError",
    "WriteFailed",
    "__version__",
    "enrich",
]
