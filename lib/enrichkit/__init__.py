"""enrichkit: enrich every record of a tabular file through LLM prompts, HTTP calls or Python functions."""

from __future__ import annotations

__version__ = "0.1.0"
