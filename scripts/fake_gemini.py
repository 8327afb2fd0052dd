"""Local stand-in for the Gemini REST API (models, generateContent, countTokens), with fault injection.

Stdlib only. Run ``python scripts/fake_gemini.py --port 0 --rpm 60 --fault safety=0.05``, or in a test
``FakeGemini(FakeConfig(rpm=2)).start()``. Bodies follow Google's wire format (google.rpc details, camelCase).
Not Google's: GET /_health, GET /_stats, POST /_control, and GET|HEAD /grounding-api-redirect/{token}, which
stands in for vertexaisearch.cloud.google.com (302 to the source; the target is never fetched).

The code lives in the package ``gemini_standin`` beside this file; this module is its entry point and keeps
the names callers import (``from fake_gemini import FakeGemini, FakeConfig``).
"""

from __future__ import annotations

import sys

from gemini_standin import (
    ANSWER_FAULTS,
    CATALOGUE,
    CHOICES,
    ERROR_FAULTS,
    FAULTS,
    RETIRED,
    FakeConfig,
    FakeGemini,
    ModelInfo,
    QuotaWindow,
    Raw,
    Reply,
    ScaledClock,
    coerce,
    error_body,
    error_fault,
    main,
    make_value,
    not_found,
    parse_args,
    quota_error,
    quota_ids,
    resource,
)

__all__ = [
    "ANSWER_FAULTS", "CATALOGUE", "CHOICES", "ERROR_FAULTS", "FAULTS", "RETIRED", "FakeConfig", "FakeGemini",
    "ModelInfo", "QuotaWindow", "Raw", "Reply", "ScaledClock", "coerce", "error_body", "error_fault", "main",
    "make_value", "not_found", "parse_args", "quota_error", "quota_ids", "resource",
]

if __name__ == "__main__":
    sys.exit(main())
