"""The test seam: providers and a clock every `Job` made inside a block uses (`enrichkit.testing.use` opens it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from enrichkit.providers.base import Provider

_installed: dict[str, Any] = {}


def default_providers() -> dict[str, Provider]:
    return dict(_installed.get("providers") or {})


def default_clock() -> Callable[[], float] | None:
    clock: Callable[[], float] | None = _installed.get("clock")
    return clock


@contextlib.contextmanager
def installed(*, providers: Mapping[str, Provider] | None = None, clock: Callable[[], float] | None = None
              ) -> Iterator[None]:
    """Every `Job` made inside the block (the CLI's too) uses these providers and this clock unless given its
    own: the seam `enrichkit.testing.use` opens for tests of code that makes its Jobs itself."""
    saved = dict(_installed)
    _installed.update({"providers": dict(providers or {}), "clock": clock})
    try:
        yield
    finally:
        _installed.clear()
        _installed.update(saved)
