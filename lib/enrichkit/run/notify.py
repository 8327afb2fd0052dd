"""`--notify-url`: one JSON POST when a run ends, whatever the exit, so a person hears about it.

The summary carries the job ID, status, exit code, counts, cost, wall time, records/min, the job's
files and the command that continues it, and `text`: the same in one paragraph, which is all a
Slack incoming webhook reads (Discord reads `content`, which holds the same paragraph).

A notification never changes the run's outcome: it never raises, gives up after 3 tries (10 s each,
1 s then 2 s apart) and, whatever the receiver does, within 30 s in all (`DEADLINE`: an overall
deadline, not a per-read timeout, which a receiver dribbling a byte every few seconds never trips),
and returns at once when `should_stop` says so (a Ctrl+C while it waits): the POST runs in a daemon
thread, so an unanswered request never holds the exit. A redirect is not followed (the summary names
paths, the host and the resume command; a 3xx could send it to any host): it is reported as the
answer. The CLI sends it after the job's files are closed and its lock released, so a slow receiver
never blocks the next run. The payload passes through the one redaction step, so no API key can leave
in it.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import requests
import tenacity

from enrichkit.errors import Abandoned
from enrichkit.jobs.continuing import next_command
from enrichkit.jobs.state import duration_text
from enrichkit.pace.retry import interruptible_sleep
from enrichkit.redact import redact, redact_tree
from enrichkit.store.jobfiles import JobPaths

TRIES = 3
TIMEOUT = 10.0
DEADLINE = 30.0  # every try, and the waits between them
_POLL = 0.1  # how often a wait for the answer looks at `should_stop`
_DISCORD_LIMIT = 2000

Post = Callable[..., Any]  # requests.post's shape: post(url, json=..., timeout=..., allow_redirects=...) -> response


def build_summary(report: Mapping[str, Any], paths: JobPaths, *, host: str | None = None) -> dict[str, Any]:
    """The JSON a run's end posts, from the run's report (`enrichkit.run.report.build_report`) and its files."""
    counts = dict(report.get("counts") or {})
    status = str(report.get("status", "?"))
    exit_code = report.get("exit_code")
    pending, failed = int(counts.get("pending") or 0), int(counts.get("failed") or 0)
    command = next_command(paths, status, pending=pending, failed=failed)
    cost = float(report.get("cost_usd") or 0.0)
    rate = report.get("records_per_minute")
    wall = float(report.get("wall_seconds") or 0.0)
    summary: dict[str, Any] = {
        "event": "enrichkit.run_end",
        "job_id": report.get("job_id"),
        "status": status,
        "exit_code": exit_code,
        "message": report.get("message", ""),
        "host": host or socket.gethostname(),
        "started_at": report.get("started_at"),
        "finished_at": report.get("finished_at"),
        "wall_seconds": wall,
        "records_per_minute": rate,
        "counts": counts,
        "cost_usd": cost,
        "cost": report.get("cost"),
        "tokens": report.get("tokens"),
        "files": {"input": str(paths.input) if paths.input else None, "output": str(paths.output),
                  "checkpoint": str(paths.checkpoint), "report": str(paths.report), "errors": str(paths.errors)},
        "resume_command": command,
    }
    done, total = counts.get("completed", 0), counts.get("total", 0)
    total = max(total, done + failed)  # never "200 of 103 done" (an output holding rows the input no longer has)
    this_run = counts.get("completed_this_run")
    text = (f"enrichkit job {summary['job_id']} on {summary['host']}: {status} (exit {exit_code}). "
            f"{done:,} of {total:,} records done, {failed:,} failed, {pending:,} pending; cost ${cost:.4f}. "
            f"This run: {this_run if this_run is not None else '?'} records in {duration_text(wall)}"
            + (f" ({rate:,.1f} records/min)." if isinstance(rate, (int, float)) else ".")
            + (f" {report['message']}" if report.get("message") else "")
            + f" Output: {paths.output}."
            + (f" Continue with: {command}" if command else ""))
    summary["text"] = text
    summary["content"] = text[:_DISCORD_LIMIT]
    result: dict[str, Any] = redact_tree(summary)
    return result


class _OutOfTime(tenacity.stop.stop_base):
    """Stop trying when too little of the notification's time is left for another try to be worth it."""

    def __init__(self, end: float, clock: Callable[[], float]) -> None:
        self.end, self.clock = end, clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.clock() >= self.end - 0.5


class _Failed(Exception):
    """One try failed; `retry` is False when trying again cannot help (a 4xx: a wrong URL)."""

    def __init__(self, reason: str, *, retry: bool = True) -> None:
        super().__init__(reason)
        self.retry = retry


def send_summary(url: str, payload: Mapping[str, Any], *, should_stop: Callable[[], bool] = lambda: False,
                 post: Post = requests.post, sleep: Callable[[float], object] = time.sleep,
                 tries: int = TRIES, timeout: float = TIMEOUT, deadline: float = DEADLINE,
                 clock: Callable[[], float] = time.monotonic) -> str | None:
    """POST `payload` to `url`; None when a 2xx answered, else the one warning line to print.
    Never raises, KeyboardInterrupt included (the run is over; its exit code must stand). The waits
    between tries are slept in short naps of `sleep` and end as soon as `should_stop` turns true;
    everything ends by `deadline` seconds after the call (by `clock`)."""
    where = _where(url)
    end = clock() + deadline

    def wait(seconds: float) -> None:  # tenacity's sleep between tries, never past the deadline
        interruptible_sleep(max(0.0, min(seconds, end - clock())), sleep, should_stop)

    def attempt() -> None:
        if should_stop():
            raise Abandoned()
        left = end - clock()
        if left <= 0:
            raise _Failed(f"no answer within {deadline:g} s in all", retry=False)
        status, location = _post_abortably(post, url, dict(payload), min(timeout, left), should_stop, end, clock)
        if 300 <= status < 400:
            raise _Failed(f"HTTP {status}, a redirect{_to(location)}; not followed (give the URL it names, "
                          "if you trust it)", retry=False)
        if not 200 <= status < 300:
            raise _Failed(f"HTTP {status}", retry=status >= 500 or status in (408, 429))

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(tries) | _OutOfTime(end, clock),
        wait=tenacity.wait_exponential(multiplier=1, min=1, max=8),
        sleep=wait, reraise=True, retry=tenacity.retry_if_exception(lambda e: isinstance(e, _Failed) and e.retry))
    try:
        retrying(attempt)
    except Abandoned:
        return f"notification to {where} abandoned (stop requested); the run's result is unchanged"
    except KeyboardInterrupt:
        return f"notification to {where} abandoned (interrupted); the run's result is unchanged"
    except _Failed as exc:
        tried = "" if not exc.retry else f" after {tries} tries"
        return f"notification to {where} failed{tried}: {redact(str(exc))}; the run's result is unchanged"
    except Exception as exc:  # noqa: BLE001 - a notification must never change how a run ends
        return f"notification to {where} failed: {redact(repr(exc))[:200]}; the run's result is unchanged"
    return None


def _post_abortably(post: Post, url: str, payload: dict[str, Any], timeout: float,
                    should_stop: Callable[[], bool], end: float, clock: Callable[[], float]) -> tuple[int, str]:
    """(HTTP status, its Location header) of one POST, made in a daemon thread so that `should_stop` (or
    a Ctrl+C in the calling thread) never has to wait for an unanswered request, and the caller stops
    waiting at `end` whatever the receiver does (the thread is left behind; it holds nothing)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            response = post(url, json=payload, timeout=timeout, allow_redirects=False)
            outcome["status"] = int(response.status_code)
            outcome["location"] = str((getattr(response, "headers", None) or {}).get("location") or "")
            response.close()
        except requests.RequestException as exc:
            outcome["error"] = _reason(exc)
        except Exception as exc:  # noqa: BLE001 - reported as a failed try
            outcome["error"] = repr(exc)

    worker = threading.Thread(target=run, name="notify", daemon=True)
    worker.start()
    while worker.is_alive():
        if should_stop():
            raise Abandoned()
        left = end - clock()
        if left <= 0:
            raise _Failed("no whole answer in time (the notification's time is up)", retry=False)
        worker.join(min(_POLL, left))
    if "status" in outcome:
        return int(outcome["status"]), str(outcome.get("location", ""))
    raise _Failed(str(outcome.get("error", "no answer")))


def _to(location: str) -> str:
    """ " to <scheme://host>" of a redirect's target, without its path (which may be a secret)."""
    if not location:
        return ""
    parts = urllib.parse.urlsplit(location)
    return f" to {parts.scheme}://{parts.hostname}" if parts.hostname else " to another path"


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    return type(exc).__name__


def _where(url: str) -> str:
    """The URL without its path: a webhook's path is its secret, so it never reaches a log line."""
    try:
        parts = urllib.parse.urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a port out of range, say: still one warning line, never a crash
        return "the notification URL"


def notify_run_end(url: str, report: Mapping[str, Any], paths: JobPaths, *,
                   should_stop: Callable[[], bool] = lambda: False, post: Post = requests.post,
                   sleep: Callable[[float], object] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> str | None:
    """Build the summary of a run that ended and POST it; returns a warning line, or None when delivered."""
    try:
        payload = build_summary(report, paths)
    except Exception as exc:  # noqa: BLE001 - a notification must never change how a run ends
        return f"notification not sent: cannot build the summary ({redact(repr(exc))[:200]})"
    return send_summary(url, payload, should_stop=should_stop, post=post, sleep=sleep, clock=clock)
