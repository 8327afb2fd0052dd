"""The edge both CLIs share (`enrich.py`, `jobs.py`): the one place an error becomes one line and an exit code,
and a stdout or stderr closed early (`... | head`) changes neither the exit code nor any file."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import TextIO

from enrichkit.errors import EXIT_INTERRUPTED, EXIT_USAGE, EnrichError
from enrichkit.logs import say
from enrichkit.redact import redact

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def reopen_closed_streams() -> None:
    """A stdin, stdout or stderr closed before the start (`>&-`, `2>&-`, `<&-`) becomes /dev/null. Else Python
    leaves `sys.stdout` None (a crash at the first print) and the next file opened takes the free descriptor, so
    whatever writes to it would land in the output or the checkpoint. Call first, before any file is opened."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if not _usable(fd, os.O_WRONLY if fd else os.O_RDONLY):
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8", closefd=False))  # noqa: SIM115


def _usable(fd: int, mode: int) -> bool:
    """Whether `fd` is open for `mode` (a closed stderr may have been taken by a file a launcher opened for reading,
    as pyenv's `python` shim does with its own script: every write to it then fails)."""
    try:
        if fcntl is None:  # Windows: only whether it is open
            os.fstat(fd)
            return True
        access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        return False
    return access in (os.O_RDWR, mode)


def error_edge(prog: str, action: Callable[[], int]) -> int:
    """Run `action`; a user's mistake is one line (`ENRICHKIT_DEBUG=1` adds the traceback) and its exit code.
    A bug is one line too, but re-raised under test (`sys._called_from_test`) so it cannot hide as an exit code."""
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
