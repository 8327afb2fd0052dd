"""How every genai client of enrichkit is built: the Gemini API's version, a timeout, the SDK's own retry off
(enrichkit's does the work), and one TLS context for the whole process. The run's client
(`providers.gemini`) and the Batch API's (`batch.google`) both take their options here."""

from __future__ import annotations

import functools
import os
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.genai.types import HttpOptions

API_VERSION = "v1beta"


def tls_context() -> ssl.SSLContext:
    """The TLS context every genai client of this process shares: the one the SDK would make for itself
    (google-genai 3.x on httpx2: SSL_CERT_FILE / SSL_CERT_DIR when set, else the system's CA store). Left to
    itself, the SDK loads the CA store twice for every client (httpx's context and an unused websocket one):
    ~65 ms a client, paid by every run."""
    return _tls_context(os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None)


@functools.cache
def _tls_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    import httpx2

    return httpx2.create_ssl_context()


def http_options(base_url: str | None, timeout: float) -> HttpOptions:
    """The genai `HttpOptions` enrichkit's clients use: its base URL and API version, a timeout, the SDK's own
    retry off (enrichkit's does the work), and the process's one TLS context (`tls_context`)."""
    from google.genai import types

    tls = tls_context()
    return types.HttpOptions(base_url=base_url or None, api_version=API_VERSION, timeout=int(timeout * 1000),
                             retry_options=types.HttpRetryOptions(attempts=1), client_args={"verify": tls},
                             async_client_args={"verify": tls, "ssl": tls})  # "ssl": the websocket client's
