"""A fork server for the tests' real processes (the pattern of multiprocessing's forkserver, Rails' spring).

Every `python scripts/enrich.py ...` started as a process pays Python's start-up and `import google.genai` (its
types build hundreds of pydantic models): about a CPU-second each, dozens of times a suite. The zygote is one
fresh interpreter per pytest worker that imports those modules once, then waits on a Unix socket; each start
is a fork of it, which then becomes `python <script> <args>` as a fresh interpreter would: the caller's
environment, folder and std streams (sent with SCM_RIGHTS; a closed one stays closed), the signal dispositions
of a fresh Python (plus the ones the caller ignores, which a real child inherits), `sys.argv`, `sys.path[0]`,
std streams built as start-up builds them (PYTHONUNBUFFERED, a tty's line buffering), `random` reseeded and
the exit as the interpreter's: non-daemon threads joined, atexit run, stdio flushed, SystemExit mapped, an
uncaught exception's traceback and 1, an uncaught KeyboardInterrupt a death by SIGINT. Its pid is a real pid
(kill -9, signals, locks); the zygote reaps it and reports the status (-9 for kill -9, as subprocess does).

Only `[sys.executable, scripts/enrich.py or scripts/jobs.py, ...]` go through it, and only with what
`popen`/`run` support (no preexec_fn, pass_fds, ...; no PYTHON*/locale variable other than the zygote's,
which start-up reads before any code runs); everything else is a real `subprocess`. So is every start when
ENRICHKIT_TEST_REAL_PROCESSES=1, and every one after the zygote failed (with one warning).

Import-time state the zygote's imports would hand to every child (audited in lib/enrichkit and scripts/, see
`PRELOAD`): none reads the environment, the folder, the clock or the fds at import; `config.envfiles` takes
`os.environ` at call time (the child changes that very mapping in place); module-level locks and counters are
never taken or advanced in the zygote (single-threaded, runs nothing); `logging` is only given a NullHandler at
import (the CLI sets its handler on the child's stderr when it runs); `scripts/_bootstrap` (sys.path, the venv
re-exec) is not preloaded, so each child runs it. What the child resets: os.environ, the folder, TZ (tzset),
sys.argv/path/std streams, signal dispositions, the seed of every module-level `random.Random` (random's own,
trio's). Checked unset after the imports: tempfile.tempdir, mimetypes, warnings raised, threads (one).
Shared, as a fork shares it: the str hash seed (a real process draws its own; every child iterates a set of
strings in the same order).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {(ROOT / "scripts" / "enrich.py").resolve(), (ROOT / "scripts" / "jobs.py").resolve()}
# What a run of each script imports (measured with -X importtime on a run against the stand-in and on jobs.py's
# commands): the third-party packages and the enrichkit modules; not `_bootstrap`, which settles sys.path.
PRELOAD = ["google.genai", "google.genai.types", "httpx", "pydantic", "filelock", "tenacity", "dotenv",
           "enrichkit.cli", "enrichkit.edge", "enrichkit.api", "enrichkit.jobs.cli", "enrichkit.run.job",
           "enrichkit.run.pipeline", "enrichkit.providers.gemini", "enrichkit.providers.function",
           "enrichkit.batch.start", "enrichkit.batch.run", "enrichkit.batch.sweep", "enrichkit.batch.collect",
           "enrichkit.tables.delimited", "enrichkit.tables.jsonlines", "enrichkit.tables.xlsx",
           "enrichkit.tables.workbooks", "enrichkit.tables.text", "enrichkit.builtin"]
# What the SDK's HTTP transport imports when the first client is made (as google-genai 3.4 does; skipped if absent).
LAZY = ["httpcore2", "trio", "truststore", "h11", "sortedcontainers", "attrs", "outcome", "anyio.streams.tls",
        "google.auth.aio.credentials"]
# Read by the interpreter's start-up, before any code: a child of the zygote would have the zygote's.
STARTUP_VARIABLES = ("PYTHON", "LC_", "LANG")
OFF = "ENRICHKIT_TEST_REAL_PROCESSES"
CLOSED = -3  # as a std stream of `popen`: closed in the child (as `>&-` in a shell)
_SHUT_PIPE = -4  # a pipe whose child end a shell closed: the caller reads nothing from it
_READ_NULL = -5  # /dev/null opened for reading (as `2</dev/null`)
_READ_NULL_SHUT_PIPE = -6  # both: the caller's pipe, which the shell replaced by /dev/null for reading
# `["sh", "-c", 'exec "$@" <these>', "sh", *command]`, as tests close streams: the same, by the zygote
SHELL_REDIRECTS = {"<&-": (0, CLOSED), ">&-": (1, CLOSED), "2>&-": (2, CLOSED), "2</dev/null": (2, _READ_NULL)}
REPLY_SECONDS = 30.0
HEADER = struct.Struct("!I")


# --- the server (a fresh interpreter: `python tests/zygote.py SOCKET`) ------------------------------------------


def serve(path: str) -> None:
    startup_path = list(sys.path)
    sys.path.insert(0, str(ROOT / "lib"))
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    for name in LAZY:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    sys.path[:] = startup_path
    import random

    # Module-level generators seeded at import (random's own, trio's scheduler's): reseeded in every child.
    _RANDOMS.extend(value for module in list(sys.modules.values()) for value in vars(module).values()
                    if isinstance(value, random.Random) and not isinstance(value, random.SystemRandom))
    import gc

    gc.collect()
    gc.freeze()  # the children's collections need not walk (and so copy) the zygote's objects
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children: dict[int, socket.socket] = {}
    sys.stdout.write(f"ready {os.getpid()}\n")
    sys.stdout.flush()
    while True:
        readable, _, _ = select.select([listener, wake_r, 0], [], [], 1.0)
        if 0 in readable and not os.read(0, 4096):
            return  # the pytest worker closed our stdin (session end) or died
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 4096):
                    pass
        _reap(children)
        if listener in readable:
            conn, _ = listener.accept()
            conn.settimeout(REPLY_SECONDS)
            try:
                request, fds = _receive(conn)
            except (OSError, ValueError) as exc:
                sys.stderr.write(f"zygote: a bad request: {exc!r}\n")
                conn.close()
                continue
            if threading.active_count() != 1:
                sys.stderr.write(f"zygote: {threading.active_count()} threads, cannot fork safely: "
                                 f"{threading.enumerate()}\n")
                raise SystemExit(3)
            pid = os.fork()
            if pid == 0:
                _child(request, fds, [listener, conn, *children.values()], (wake_r, wake_w))
            for fd in fds:
                os.close(fd)
            children[pid] = conn
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                cpu = usage.ru_utime + usage.ru_stime
                conn.sendall(json.dumps({"status": status, "cpu": cpu}).encode() + b"\n")
            conn.close()


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    while len(data) < HEADER.size:
        data += conn.recv(1 << 16)
    size = HEADER.unpack_from(data)[0]
    while len(data) < HEADER.size + size:
        more = conn.recv(1 << 16)
        if not more:
            raise ValueError("the request ended early")
        data += more
    return json.loads(data[HEADER.size:HEADER.size + size]), list(fds)


def _child(request: dict[str, Any], fds: list[int], sockets: list[socket.socket], wake: tuple[int, int]) -> None:
    """In the forked child: become `python <argv...>` and never return."""
    try:
        _become(request, fds, sockets, wake)
    except BaseException:
        with contextlib.suppress(BaseException):
            import traceback

            os.write(2, ("zygote child: could not start: " + traceback.format_exc()).encode())
        os._exit(127)
    _run(request["argv"])


_KEPT: list[Any] = []  # the zygote's own std streams: never finalized in a child (they would close fds 0-2)
_RANDOMS: list[Any] = []


def _become(request: dict[str, Any], fds: list[int], sockets: list[socket.socket], wake: tuple[int, int]) -> None:
    signal.set_wakeup_fd(-1)
    for sock in sockets:
        sock.detach()  # the fd goes with the other fds below; the object must never close a reused number
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as CPython's start-up
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    for signum in request["ignore"]:  # what the caller ignores, a real child inherits
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    if request["new_session"]:
        os.setsid()
    given = iter(fds)
    std = [None if closed else next(given) for closed in request["closed"]]
    for target, fd in enumerate(std):
        if fd is not None:
            os.dup2(fd, target)
    for target, fd in enumerate(std):
        if fd is None:
            with contextlib.suppress(OSError):
                os.close(target)
    for entry in Path("/proc/self/fd").iterdir():
        if int(entry.name) > 2:
            with contextlib.suppress(OSError):
                os.close(int(entry.name))
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    _KEPT.extend([sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__])
    sys.stdin = sys.__stdin__ = _stream(0, sys.__stdin__, unbuffered)  # type: ignore[misc]
    sys.stdout = sys.__stdout__ = _stream(1, sys.__stdout__, unbuffered)  # type: ignore[misc]
    sys.stderr = sys.__stderr__ = _stream(2, sys.__stderr__, unbuffered)  # type: ignore[misc]
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[0] = str(Path(script).resolve().parent)
    for generator in _RANDOMS:
        generator.seed()


def _stream(fd: int, like: IO[str] | None, unbuffered: bool) -> io.TextIOWrapper | None:
    """The std stream on `fd` as the interpreter's start-up builds it (None when the fd is closed)."""
    try:
        os.fstat(fd)
    except OSError:
        return None
    encoding = getattr(like, "encoding", None) or "utf-8"
    errors = getattr(like, "errors", None) or ("backslashreplace" if fd == 2 else "strict")
    if fd == 0:
        return io.TextIOWrapper(open(fd, "rb", closefd=False), encoding=encoding, errors=errors)
    raw = io.FileIO(fd, "wb", closefd=False)
    if unbuffered:
        return io.TextIOWrapper(raw, encoding=encoding, errors=errors, write_through=True)  # type: ignore[type-var]
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=encoding, errors=errors,
                            line_buffering=fd == 2 or os.isatty(fd))


def _run(argv: list[str]) -> None:
    import runpy

    script = argv[0]
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt as exc:
        _print_exception(exc, script)
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as CPython: an uncaught KeyboardInterrupt is a death by SIGINT
        code = 130
    except BaseException as exc:
        _print_exception(exc, script)
        code = 1
    _finish(code)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    with contextlib.suppress(Exception):
        if sys.stderr is not None:
            sys.stderr.write(f"{exc.code}\n")
    return 1


def _print_exception(exc: BaseException, script: str) -> None:
    """The traceback from the script's frame on, as `python script` prints it (without runpy's frames)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != script:
        tb = tb.tb_next
    with contextlib.suppress(BaseException):
        sys.excepthook(type(exc), exc, tb or exc.__traceback__)


def _finish(code: int) -> None:
    """The interpreter's exit: non-daemon threads joined, atexit, stdio flushed; then the status."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    if not _flush() and code == 0:
        code = 120  # as CPython when flushing stdout at exit fails
    os._exit(code & 0xFF)


def _flush() -> bool:
    ok = True
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except Exception:
            ok = False
    return ok


# --- the client (in the pytest worker) --------------------------------------------------------------------------


class _Zygote:
    """The worker's zygote: started on first use, closed at session end (`close`)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ekz-"))  # short: a socket's path has 107 bytes at most
        self.path = str(self.folder / "s")
        self.log = open(self.folder / "zygote.log", "wb")  # noqa: SIM115 - lives with the zygote
        self.env = dict(os.environ)
        self.proc = subprocess.Popen([sys.executable, __file__, self.path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT, env=self.env)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline() if ready else b""
        if not line.startswith(b"ready"):
            self.close()
            raise OSError(f"the zygote did not start: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return Path(self.log.name).read_text(errors="replace")[-2000:]
        return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()
        for name in ("s", "zygote.log"):
            with contextlib.suppress(OSError):
                (self.folder / name).unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()


_zygote: _Zygote | None = None
_failed = False


def _server() -> _Zygote | None:
    global _zygote, _failed
    if _failed:
        return None
    if _zygote is not None and _zygote.alive():
        return _zygote
    if _zygote is not None:
        _broken(f"the zygote died (exit {_zygote.proc.returncode}): {_zygote.log_tail()}")
        return None
    try:
        _zygote = _Zygote()
    except OSError as exc:
        _broken(str(exc))
        return None
    return _zygote


def _broken(why: str) -> None:
    global _failed
    if not _failed:
        warnings.warn(f"tests/zygote.py: real processes from now on: {why}", RuntimeWarning, stacklevel=3)
    _failed = True


def close() -> None:
    """At session end: stop the zygote (its children, if any, run on as a real Popen's would)."""
    global _zygote
    if _zygote is not None:
        _zygote.close()
        _zygote = None


def _eligible(args: Sequence[Any], env: Mapping[str, str], options: Mapping[str, Any]) -> bool:
    if os.environ.get(OFF) == "1" or options or len(args) < 2 or args[0] != sys.executable:
        return False
    if not isinstance(args[1], str | os.PathLike) or Path(args[1]).resolve() not in SCRIPTS:
        return False
    base = _zygote.env if _zygote is not None else os.environ
    return all(env.get(k) == base.get(k) for k in {*env, *base}
               if k.startswith(STARTUP_VARIABLES) and k != "PYTHONUNBUFFERED")


def popen(args: Sequence[Any], *, stdin: Any = None, stdout: Any = None, stderr: Any = None, text: bool = False,
          env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
          start_new_session: bool = False, **options: Any) -> subprocess.Popen[Any] | ZygoteProcess:
    """`subprocess.Popen` for the CLI scripts through the zygote; a real Popen for anything else (see module)."""
    real_env = dict(os.environ if env is None else env)
    command, streams = _unwrapped(args, [stdin, stdout, stderr])
    if _eligible(command, real_env, options) and (server := _server()) is not None:
        try:
            return ZygoteProcess(server, [str(a) for a in command], stdin=streams[0], stdout=streams[1],
                                 stderr=streams[2], text=text, env=real_env,
                                 cwd=str(cwd) if cwd is not None else str(Path.cwd()),
                                 start_new_session=start_new_session)
        except OSError as exc:
            _broken(f"a start failed: {exc!r}")
    streams = [stdin, stdout, stderr]
    if CLOSED in streams:  # closed as a shell closes them, then the command itself
        shut = " ".join(f"{fd}>&-" for fd, s in enumerate(streams) if s == CLOSED)
        args = ["sh", "-c", f'exec "$@" {shut}', "sh", *args]
        streams = [None if s == CLOSED else s for s in streams]
    return subprocess.Popen(list(args), stdin=streams[0], stdout=streams[1], stderr=streams[2], text=text,
                            env=env, cwd=cwd, start_new_session=start_new_session, **options)


def _unwrapped(args: Sequence[Any], streams: list[Any]) -> tuple[Sequence[Any], list[Any]]:
    """A command a shell runs only to close or replace std streams, and the streams it then has; else as given."""
    if len(args) < 5 or list(args[:2]) != ["sh", "-c"] or args[3] != "sh" or not str(args[2]).startswith(
            'exec "$@"'):
        return args, streams
    words = str(args[2]).split()[2:]
    if not all(word in SHELL_REDIRECTS for word in words):
        return args, streams
    streams = list(streams)
    for word in words:
        fd, how = SHELL_REDIRECTS[word]
        if streams[fd] == subprocess.PIPE:
            how = _SHUT_PIPE if how == CLOSED else _READ_NULL_SHUT_PIPE
        streams[fd] = how
    return args[4:], streams


def run(args: Sequence[Any], *, input: str | bytes | None = None, capture_output: bool = False,
        timeout: float | None = None, check: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run` over `popen`."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    with popen(args, **kwargs) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            exc.stdout, exc.stderr = proc.communicate()
            raise
        except BaseException:
            proc.kill()
            raise
        code = proc.poll()
    assert code is not None
    if check and code:
        raise subprocess.CalledProcessError(code, list(args), out, err)
    return subprocess.CompletedProcess(list(args), code, out, err)


class ZygoteProcess:
    """A process forked by the zygote, with what the tests use of `subprocess.Popen`."""

    def __init__(self, server: _Zygote, args: list[str], *, stdin: Any, stdout: Any, stderr: Any, text: bool,
                 env: dict[str, str], cwd: str, start_new_session: bool) -> None:
        self.args = args
        self.text = text
        self.returncode: int | None = None
        self.cpu_seconds: float | None = None  # the child's user+system CPU, once it ended
        self.stdin: IO[Any] | None = None
        self.stdout: IO[Any] | None = None
        self.stderr: IO[Any] | None = None
        self._chunks: dict[int, list[bytes]] = {}
        self._conn: socket.socket | None = None
        self._replies = b""
        close_after: list[int] = []
        child_fds: list[int | None] = []
        mine: dict[int, int] = {}
        try:
            for target, spec in enumerate((stdin, stdout, stderr)):
                if spec == subprocess.STDOUT and target == 2:
                    child_fds.append(child_fds[1])
                    continue
                child_fds.append(self._child_end(target, spec, close_after, mine))
            ignored = [int(s) for s in signal.valid_signals() if s not in (signal.SIGPIPE, signal.SIGXFSZ)
                       and _ignored(s)]
            request = {"argv": args[1:], "env": env, "cwd": cwd, "closed": [fd is None for fd in child_fds],
                       "ignore": ignored, "new_session": start_new_session}
            payload = json.dumps(request).encode()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(REPLY_SECONDS)
            sock.connect(server.path)
            self._conn = sock
            message = HEADER.pack(len(payload)) + payload
            sent = socket.send_fds(sock, [message], [fd for fd in child_fds if fd is not None])
            sock.sendall(message[sent:])
            reply = self._reply(REPLY_SECONDS)
            if reply is None or "pid" not in reply:
                raise OSError(f"the zygote did not answer: {server.log_tail()}")
            self.pid: int = reply["pid"]
        except BaseException:
            for fd in mine.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self._conn is not None:
                self._conn.close()
            raise
        finally:
            for fd in close_after:
                with contextlib.suppress(OSError):
                    os.close(fd)
        for target, fd in mine.items():
            if target == 0:
                self.stdin = open(fd, "w" if text else "wb")  # noqa: SIM115 - the caller's, as Popen's
            else:
                self._chunks[fd] = []
                stream = open(fd, "r" if text else "rb")  # noqa: SIM115 - the caller's, as Popen's
                if target == 1:
                    self.stdout = stream
                else:
                    self.stderr = stream

    @staticmethod
    def _child_end(target: int, spec: Any, close_after: list[int], mine: dict[int, int]) -> int | None:
        if spec == CLOSED:
            return None
        if spec in (_SHUT_PIPE, _READ_NULL_SHUT_PIPE):
            r, w = os.pipe()
            child, parent = (r, w) if target == 0 else (w, r)
            os.close(child)
            mine[target] = parent
            if spec == _SHUT_PIPE:
                return None
        if spec in (_READ_NULL, _READ_NULL_SHUT_PIPE):
            fd = os.open(os.devnull, os.O_RDONLY)
            close_after.append(fd)
            return fd
        if spec is None:
            try:
                os.fstat(target)
            except OSError:
                return None  # closed here: closed in a real child too
            return target
        if spec == subprocess.DEVNULL:
            fd = os.open(os.devnull, os.O_RDONLY if target == 0 else os.O_WRONLY)
            close_after.append(fd)
            return fd
        if spec == subprocess.PIPE:
            r, w = os.pipe()
            child, parent = (r, w) if target == 0 else (w, r)
            close_after.append(child)
            mine[target] = parent
            return child
        if isinstance(spec, int):
            return spec
        return int(spec.fileno())

    def _reply(self, timeout: float | None) -> dict[str, Any] | None:
        """The zygote's next line about this process, or None when none came in `timeout`."""
        assert self._conn is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._replies:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._conn], [], [], left)
            if not ready:
                return None
            data = self._conn.recv(4096)
            if not data:
                raise OSError(f"the zygote went away while {self.args} ran")
            self._replies += data
        line, self._replies = self._replies.split(b"\n", 1)
        return dict(json.loads(line))

    def _status(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            reply = self._reply(timeout)
            if reply is not None:
                self.returncode = os.waitstatus_to_exitcode(reply["status"])
                self.cpu_seconds = float(reply["cpu"])
                assert self._conn is not None
                self._conn.close()
        return self.returncode

    def poll(self) -> int | None:
        return self._status(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: str | bytes | None = None, timeout: float | None = None
                    ) -> tuple[Any, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                if input:
                    self.stdin.write(input)
                self.stdin.close()
            self.stdin = None
        streams = [s for s in (self.stdout, self.stderr) if s is not None and not s.closed]
        open_fds = [s.fileno() for s in streams]
        while open_fds:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            ready, _, _ = select.select(open_fds, [], [], left)
            for fd in ready:
                data = os.read(fd, 32768)
                if data:
                    self._chunks[fd].append(data)
                else:
                    open_fds.remove(fd)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(left)
        results: list[Any] = []
        for stream in (self.stdout, self.stderr):
            if stream is None:
                results.append(None)
                continue
            data = b"".join(self._chunks.get(stream.fileno(), [])) if not stream.closed else b""
            stream.close()
            results.append(_decode(data) if self.text else data)
        return results[0], results[1]

    def __enter__(self) -> ZygoteProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.wait()


def _ignored(signum: int) -> bool:
    try:
        return signal.getsignal(signum) == signal.SIG_IGN
    except (OSError, ValueError):
        return False


def _decode(data: bytes) -> str:
    import locale

    return data.decode(locale.getencoding()).replace("\r\n", "\n").replace("\r", "\n")


if __name__ == "__main__":
    serve(sys.argv[1])
