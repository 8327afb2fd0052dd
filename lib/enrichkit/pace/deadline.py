"""--timeout as a deadline for a whole request: connecting, sending, the headers and every byte of the answer.

HTTP clients bound each read (httpx's and requests' `timeout`), so a server that drips a byte a second
keeps a request alive for as long as it likes. `call_with_deadline` runs the request on a helper thread
and gives up on it when the deadline passes: the caller gets `DeadlineExceeded` (a `TimeoutError`,
logged as `timeout`) at the deadline, whatever the server does. The helper thread is a daemon left to
end on its own (its client's per-read timeout, or the server closing); it never holds the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

MAX_SECONDS = 86_400.0  # the longest deadline (--timeout, a stage's timeout): a day; threads and sockets refuse ~1e10


class DeadlineExceeded(TimeoutError):
    """No complete answer within the request's deadline."""


def call_with_deadline(call: Callable[[], T], seconds: float, *, on_abandon: Callable[[], None] = lambda: None) -> T:
    """`call()` on a helper thread, waited for at most `seconds`; `on_abandon` runs when it is given up."""
    done = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="enrich-request", daemon=True).start()
    if not done.wait(seconds):
        on_abandon()
        raise DeadlineExceeded(f"no complete answer within --timeout {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
