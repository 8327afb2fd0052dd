"""`jobs.py serve`: a local web page and JSON API over the jobs under a folder (FastAPI on uvicorn).

    GET  /                                   the jobs page; /jobs/{key} a job's page (one HTML page, polling)
    GET  /api/jobs                           every job: the fields of `jobs.py status --json`, plus `key`
    GET  /api/jobs/{key}                     one job, plus its last errors, latest rows, fields
    GET  /api/jobs/{key}/download/{fmt}      the output so far: csv | jsonl | xlsx (?order=input)
    POST /api/jobs/{key}/cancel|resume|retry-failed   (resume, retry-failed: ?max_cost=USD sets a new budget)

Trust (SPEC "Dashboard"), the way Jupyter's server treats a shared machine: every request needs the
server's token — the URL printed at start carries it once (`?token=`), which becomes a session cookie
(HttpOnly, SameSite=Strict) holding a random session ID, not the token; scripts send `Authorization:
Bearer <token>` or `X-Enrichkit-Token`. The page never holds the token. Every POST is same-origin too;
bound to loopback, only requests addressed to a loopback name are answered (DNS rebinding gets 403).
Job files are evidence, not commands (see `catalog`, `launch`, `control`). API key values are masked
in every response, and errors are JSON with an HTTP status, never a traceback.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import logging
import math
import os
import secrets
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from enrichkit.errors import EXIT_OK, EnrichError, UsageError
from enrichkit.jobs.catalog import Catalog, Entry, Secrets
from enrichkit.jobs.control import send_stop
from enrichkit.jobs.details import job_detail, output_problem
from enrichkit.jobs.export import FORMATS, ORDERS, export_job
from enrichkit.jobs.launch import ACTIONS, Launches, launch_problem, planned, start_run
from enrichkit.jobs.state import ACTIVE
from enrichkit.store.jobfiles import file_kind, held_regular

log = logging.getLogger("enrichkit.dashboard")
TOKEN_HEADER = "x-enrichkit-token"
TOKEN_ENV = "ENRICHKIT_DASHBOARD_TOKEN"
TOKEN_MIN = 16
COOKIE = "enrichkit_session"
_SESSIONS_MAX = 1000
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
_MEDIA = {"csv": "text/csv", "jsonl": "application/x-ndjson",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def is_loopback(host: str) -> bool:
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Refused(HTTPException):
    """A request the server will not serve; `detail` is the one line the JSON error carries."""


class Sessions:
    """The browser sessions the `?token=` link opened: random IDs (what the cookie holds: never the
    token), the newest `_SESSIONS_MAX` kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, None] = {}

    def open(self) -> str:
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._ids[session] = None
            while len(self._ids) > _SESSIONS_MAX:
                del self._ids[next(iter(self._ids))]
        return session

    def __contains__(self, session: object) -> bool:
        with self._lock:
            return isinstance(session, str) and session in self._ids


def create_app(root: Path, *, token: str, host: str = "127.0.0.1", settle: float = 3.0,
               env: dict[str, str] | None = None) -> FastAPI:
    """The dashboard over the jobs under `root`. `settle`: how long a Resume waits to tell "started"
    from "exited at once" (a second run exits 3 in well under a second)."""
    if len(token) < TOKEN_MIN:
        raise UsageError(f"the dashboard's token must have at least {TOKEN_MIN} characters")
    secrets_ = Secrets(env)
    secrets_.add_env_file(Path.cwd())
    secrets_.add_env_file(root)
    catalog = Catalog(root, secrets_)
    launches = Launches()
    sessions = Sessions()
    local = is_loopback(host)
    app = FastAPI(title="enrichkit jobs", docs_url=None, redoc_url=None, openapi_url=None)
    page = resources.files("enrichkit.jobs").joinpath("dashboard.html").read_text(encoding="utf-8")

    def reply(data: Any, status: int = 200) -> Response:
        body = json.dumps(secrets_.redactor.redact_tree(data), ensure_ascii=False)
        return Response(body, status_code=status, media_type="application/json")

    def entry(key: str) -> Entry:
        found = catalog.find(key)
        if found is None:
            raise Refused(404, f"no job {key!r} under {catalog.root}")
        return found

    def readable(key: str) -> Entry:
        found = entry(key)
        if found.job is None:
            raise Refused(409, f"the checkpoint of {key} cannot be used: {found.error}")
        return found

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            redirect = _check(request, token, host, local, sessions)
        except Refused as exc:
            return reply({"error": exc.detail, "status": exc.status_code}, exc.status_code)
        response = redirect or await call_next(request)
        response.headers.update({"x-content-type-options": "nosniff", "x-frame-options": "DENY",
                                 "referrer-policy": "no-referrer", "cache-control": "no-store"})
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return reply({"error": str(exc.detail), "status": exc.status_code}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return reply({"error": "bad request: " + "; ".join(str(e.get("msg")) for e in exc.errors()), "status": 422},
                     422)

    @app.exception_handler(EnrichError)
    async def user_error(request: Request, exc: EnrichError) -> Response:
        return reply({"error": str(exc), "status": 409}, 409)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> Response:
        log.exception("dashboard: %s %s failed", request.method, request.url.path)
        return reply({"error": f"internal error ({type(exc).__name__}); see the server's terminal", "status": 500},
                     500)

    def html() -> HTMLResponse:
        nonce = secrets.token_urlsafe(12)
        text = (page.replace("{{NONCE}}", nonce)
                .replace("{{DIR}}", _escape(secrets_.redactor.redact(str(catalog.root)))))
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        return HTMLResponse(text, headers={"content-security-policy": csp})

    @app.get("/", include_in_schema=False)
    def jobs_page() -> HTMLResponse:
        return html()

    @app.get("/jobs/{key}", include_in_schema=False)
    def job_page(key: str) -> HTMLResponse:
        return html()

    @app.get("/api/jobs")
    def list_jobs(request: Request) -> Response:
        """Every job; with `If-None-Match` of the last answer's ETag, a 304 when no job changed (a poll of
        10,000 jobs then sends nothing)."""
        launches.reap()
        body = catalog.listing_json()
        etag = catalog.etag
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"etag": etag})
        return Response(body, media_type="application/json", headers={"etag": etag})

    @app.get("/api/jobs/{key}")
    def get_job(key: str) -> Response:
        found = entry(key)
        if found.job is not None:
            try:
                launch = launches.get(key)
                return reply({**job_detail(found, catalog.root),
                              "run_commands": {a: planned(found.job, a, Path.cwd()) for a in ACTIONS},
                              "launch": launch.to_json() if launch else None})
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:  # a hand-edited file
                found = Entry(key, found.checkpoint, None, f"corrupt checkpoint ({type(exc).__name__}: {exc})")
        return reply({**found.to_json(), "launch": None})

    @app.get("/api/jobs/{key}/download/{fmt}")
    def download(key: str, fmt: str, order: str = "output") -> Response:
        if fmt not in FORMATS or order not in ORDERS:
            raise Refused(404, f"downloads are {', '.join(FORMATS)}, in order {' or '.join(ORDERS)}")
        job = readable(key).job
        assert job is not None
        problem = output_problem(job, catalog.root)
        if problem:
            raise Refused(409, problem)
        if order == "input" and (why := _not_regular(job.paths.input)):
            raise Refused(409, f"the job's input {job.paths.input} is {why}; not read")
        folder = Path(tempfile.mkdtemp(prefix="enrichkit-export-"))
        target = folder / f"{job.paths.output.stem}.{fmt}"
        try:
            # The output is read as the regular file it was when checked, whatever is renamed over it since.
            with held_regular(job.paths.output) as (held, _):
                view = dataclasses.replace(job, paths=dataclasses.replace(job.paths, output=held))
                export_job(view, fmt, target, order=order, clean=secrets_.redactor.redact, only_job=job.cp.job_id)
        except BaseException:
            _remove(folder)
            raise
        return FileResponse(target, media_type=_MEDIA[fmt], filename=target.name,
                            background=BackgroundTask(_remove, folder))

    @app.post("/api/jobs/{key}/cancel")
    def cancel(key: str) -> Response:
        found = readable(key)
        result = send_stop(found.checkpoint)
        if result.outcome == "signalled":
            return reply({"outcome": "signalled", "pid": result.pid,
                          "message": f"asked PID {result.pid} to stop: in-flight records finish, then the job is "
                                     "interrupted"}, 202)
        if result.outcome == "untrusted":
            raise Refused(403, f"not acting on this job: {result.why}")
        why = {"none": f"no run is active for this job (state: {result.job.state})",
               "elsewhere": f"the run is on host {result.job.cp.host}; cancel it there",
               "denied": f"not allowed to signal PID {result.pid} (another user's process)"}
        raise Refused(409, why.get(result.outcome, result.outcome))

    def start(key: str, action: str, max_cost: float | None) -> Response:
        found = readable(key)
        job = found.job
        assert job is not None
        problem = launch_problem(job, Path.cwd())
        if problem:
            raise Refused(403, f"not starting a run of this job: {problem}")
        if job.state in ACTIVE:
            raise Refused(409, f"a run is active (PID {job.active_pid}); cancel it first")
        if action == "resume" and not job.can_resume:
            raise Refused(409, f"nothing to resume: the job is {job.state} with {job.pending} pending")
        if action == "retry-failed" and not job.can_retry_failed:
            raise Refused(409, f"nothing to retry: the job is {job.state} with {job.failed} failed")
        spent = job.cp.totals.cost_usd
        if max_cost is None and job.state == "budget_exhausted":
            raise Refused(409, f"the job spent its budget (${spent:.4f}): give a higher one (max_cost=USD), "
                               f"or run: {job.command(ACTIONS[action])}")
        if max_cost is not None and not (math.isfinite(max_cost) and max_cost > spent):
            raise Refused(422, f"max_cost must be more than the ${spent:.4f} the job has spent, not {max_cost:g}")
        launch = start_run(job, action, fallback_cwd=Path.cwd(), max_cost=max_cost, settle=settle)
        launches.add(key, launch)
        state = launch.to_json()
        if state["running"]:
            return reply({"outcome": "started", **state,
                          "message": f"{action} started (PID {launch.pid}); its output goes to {launch.log}"}, 202)
        if state["exit_code"] == 0:
            return reply({"outcome": "finished", **state, "message": f"{action}: nothing left to do"})
        if state["locked"]:
            raise Refused(409, f"another run holds this job's lock (exit 3): {state['message']}")
        raise Refused(409, f"{action} exited with code {state['exit_code']}: {state['message']}")

    @app.post("/api/jobs/{key}/resume")
    def resume(key: str, max_cost: float | None = None) -> Response:
        return start(key, "resume", max_cost)

    @app.post("/api/jobs/{key}/retry-failed")
    def retry_failed(key: str, max_cost: float | None = None) -> Response:
        return start(key, "retry-failed", max_cost)

    assert set(ACTIONS) == {"resume", "retry-failed"}
    return app


def _check(request: Request, token: str, host: str, local: bool, sessions: Sessions) -> Response | None:
    """Refuse what this server must not serve: a request without the token (header) or a session
    (cookie), a POST from another origin, a Host that is not this server's. A `?token=` link opens a
    session: a cookie and a redirect to the same URL without the token."""
    host_header = request.headers.get("host", "")
    name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    if local and name not in LOOPBACK_NAMES and name != host:
        raise Refused(403, f"this server answers on {host} only, not {name or 'an empty Host'}")
    bearer = request.headers.get("authorization", "")
    given = request.headers.get(TOKEN_HEADER) or (bearer[7:].strip() if bearer[:7].lower() == "bearer " else None)
    if given is not None and not _same(given, token):
        raise Refused(403, "wrong token")
    if "token" in request.query_params:
        if not _same(request.query_params.get("token"), token):
            raise Refused(403, "wrong token: open the link `jobs.py serve` printed")
        if request.method != "GET":
            raise Refused(403, "the token goes in a header (Authorization: Bearer, or X-Enrichkit-Token), "
                               "not in the URL of a POST")
        if request.url.path.startswith("/api/"):
            return None  # a script's GET with the token in its URL: answered as it is, no session
        clean = request.url.remove_query_params("token")
        # A relative redirect: the Host header (any name, off loopback) never chooses where it leads.
        response = RedirectResponse(clean.path + (f"?{clean.query}" if clean.query else ""), status_code=303)
        response.set_cookie(COOKIE, sessions.open(), httponly=True, samesite="strict", path="/")
        return response
    by_cookie = given is None
    if by_cookie and request.cookies.get(COOKIE) not in sessions:
        raise Refused(401, "this dashboard needs its token: open the link `jobs.py serve` printed (scripts: "
                           "send Authorization: Bearer <token>)")
    if request.method not in ("GET", "HEAD"):
        origin = request.headers.get("origin")
        site = request.headers.get("sec-fetch-site")
        if origin is not None and origin != f"{request.url.scheme}://{host_header}":
            raise Refused(403, f"cross-origin request refused (Origin {origin})")
        if site not in (None, "same-origin") or (by_cookie and origin is None and site is None):
            raise Refused(403, "cross-site request refused")
    return None


def _not_regular(path: Path | None) -> str | None:
    """Why `path` may not be read by a request (a FIFO would block it, a device never end), or None."""
    if path is None:
        return "not recorded"
    try:
        st = os.stat(path)  # noqa: PTH116 - the mode of what the name leads to
    except OSError as exc:
        return exc.strerror or str(exc)
    return None if stat.S_ISREG(st.st_mode) else f"{file_kind(st.st_mode)}, not a regular file"


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def dashboard_token(environ: Mapping[str, str], host: str) -> str:
    """The token from ENRICHKIT_DASHBOARD_TOKEN (at least 16 characters), else a new random one; a host
    beyond loopback needs it from the environment (the URL printed at start is not the way in there)."""
    token = environ.get(TOKEN_ENV)
    if token is not None:
        if len(token.strip()) < TOKEN_MIN or token != token.strip():
            raise UsageError(f"{TOKEN_ENV} must hold at least {TOKEN_MIN} characters, without spaces around them "
                             "(a long random string: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return token
    if not is_loopback(host):
        raise UsageError(f"--host {host} makes the dashboard reachable from other machines: set {TOKEN_ENV} in the "
                         f"environment (a long random string, at least {TOKEN_MIN} characters; every request will "
                         "need it)")
    return secrets.token_urlsafe(32)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _remove(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink(missing_ok=True)
    folder.rmdir()


def serve(root: Path, *, host: str = "127.0.0.1", port: int = 8765,
          environ: Mapping[str, str] | None = None) -> int:
    """Run the dashboard until Ctrl+C or SIGTERM. The token comes from ENRICHKIT_DASHBOARD_TOKEN, else is
    made here; a host other than loopback needs it from the environment."""
    import uvicorn

    token = dashboard_token(os.environ if environ is None else environ, host)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pass another --port") from None
    sock.listen(128)  # connections wait in the kernel's queue from now on, before uvicorn serves them
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{bound}/"
    app = create_app(root, token=token, host=host.strip("[]"))
    print(f"enrichkit dashboard: {url}?token={token}  (jobs under {root.resolve()})", flush=True)
    print("open that link once (the page then keeps a session); scripts send the token as "
          "`Authorization: Bearer <token>`", flush=True)
    print("press Ctrl+C to stop (runs it started go on)", flush=True)
    # A request stuck past the grace time is cancelled: SIGTERM always stops the server within seconds.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])
    sys.stdout.flush()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        os._exit(EXIT_OK)  # a worker thread still in a request must not hold the exit
    return EXIT_OK
