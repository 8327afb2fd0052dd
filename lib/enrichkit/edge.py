"""The process edge both CLIs share (`enrich.py`, `jobs.py`, `python -m enrichkit`, the console scripts): the one
place an error becomes one line and an exit code; standard streams that are closed (`>&-`, `2>&-`, `<&-`, a
daemon) or go away early (`... | head`) change neither the exit code nor any file; and the process ends with
the code its work earned, whatever threads a python stage (or a call abandoned on the wire) left running."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import NoReturn, TextIO

from enrichkit.errors import EXIT_INTERRUPTED, EXIT_USAGE, EnrichError
from enrichkit.logs import say
from enrichkit.redact import redact

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

def error_edge(prog: str, action: Callable[[], int]) -> int:
    """Run `action`; a user's mistake is one line (`ENRICHKIT_DEBUG=1` adds the traceback) and its exit code.
    A bug is one line too, but re-raised under test (`sys._called_from_test`) so it cannot hide as an exit code."""
    settle_streams()
    try:
        with quiet_stdout():
            return action()
    except EnrichError as exc:
        debug_traceback()
        say(f"{prog}: error: {redact(str(exc))}")
        return exc.exit_code
    except KeyboardInterrupt:
        say(f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    except OSError as exc:
        debug_traceback()
        where = f"{exc.filename}: " if exc.filename else ""
        say(f"{prog}: error: {where}{exc.strerror or exc}")
        return EXIT_USAGE
    except Exception as exc:
        if getattr(sys, "_called_from_test", False):
            raise
        debug_traceback()
        say(f"{prog}: internal error: {redact(repr(exc))[:300]} (a bug: rerun with ENRICHKIT_DEBUG=1 for the "
            "traceback and report it)")
        return EXIT_USAGE
    finally:
        flush_quietly()


class _QuietStdout:
    """stdout that, once its reader is gone, sends the rest of what is printed nowhere (the command still ends
    with the exit code it decided: `jobs.py validate ... | head -1` says whether the job is valid)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._gone = True
                _to_devnull(self._stream)
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone = True
                _to_devnull(self._stream)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    original = sys.stdout
    sys.stdout = _QuietStdout(original)
    try:
        yield
    finally:
        sys.stdout = original


def flush_quietly() -> None:
    """Flush stdout and stderr; if the reader went away, point them at /dev/null so the interpreter's own
    flush at exit cannot turn the exit code into 120."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            _to_devnull(stream)


def _to_devnull(stream: TextIO) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def debug_traceback() -> None:
    if os.environ.get("ENRICHKIT_DEBUG"):
        traceback.print_exc()


def settle_streams() -> None:
    """Give a closed stdin, stdout or stderr (`<&-`, `>&-`, `2>&-`) /dev/null in its place, at its own file
    descriptor. Else the first file the job opens would take descriptor 1 or 2 (a line for the terminal would
    land in the output or the lock), and `sys.stdout` would be None (every print and flush an error)."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if not _usable(fd, os.O_RDONLY if fd == 0 else os.O_WRONLY):
            try:
                null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            except OSError:
                continue
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            stream = open(fd, "r" if fd == 0 else "w", encoding="utf-8", errors="backslashreplace", closefd=False,  # noqa: SIM115 - kept for the process
                          buffering=1 if fd else -1)
            setattr(sys, name, stream)
            if fd and getattr(sys, f"__{name}__") is None:
                setattr(sys, f"__{name}__", stream)


def _usable(fd: int, mode: int) -> bool:
    """Whether `fd` is open for `mode`. A closed stderr may have been taken by a file a launcher opened for reading
    (pyenv's `python` shim hands over its own script as fd 2 under `2>&-`): every write to it would fail."""
    try:
        if fcntl is None:  # Windows: only whether it is open
            os.fstat(fd)
            return True
        access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        return False
    return access in (os.O_RDWR, mode)


def exit_process(code: int) -> NoReturn:
    """End the process with `code`. Threads still running (a python stage's own non-daemon thread, a call
    abandoned at the drain deadline) would hold the interpreter's exit open, forever for some: once the work
    is done and written, leave without them."""
    flush_quietly()
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if others:
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        flush_quietly()
        os._exit(code)
    sys.exit(code)


def run_console(main: Callable[[], int]) -> NoReturn:
    """A console script's body: the streams settled first, the exit as `exit_process` makes it."""
    settle_streams()
    exit_process(main())


def jobs_entry() -> NoReturn:
    """The `enrichkit-jobs` console script (`scripts/jobs.py`)."""
    from enrichkit.jobs.cli import main

    run_console(main)
