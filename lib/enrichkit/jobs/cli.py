"""`scripts/jobs.py`: watch and steer jobs from outside, reading only the files a job writes.

Subcommands: status, list, stats, validate, missing, export, cancel, serve. Errors the user can act
on are one line on stderr and exit 2; `validate` exits 1 on a defect, `cancel` exits 1 when no run
stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from enrichkit import commands
from enrichkit.commands import cancel_command
from enrichkit.edge import error_edge, settle_streams
from enrichkit.errors import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, UsageError
from enrichkit.jobs import views
from enrichkit.jobs.listing import AmbiguousJob, find_checkpoints, load_all, load_sorted, resolve_checkpoint, totals
from enrichkit.jobs.state import ACTIVE, JobStatus, load_status

EXAMPLES = """\
examples:
  python scripts/jobs.py status                                # the one job under this folder
  python scripts/jobs.py status out/enriched.progress.json --json
  python scripts/jobs.py list out/                             # every job under out/, newest first
  python scripts/jobs.py validate out/enriched.progress.json   # exit 0 clean, 1 with the defects
  python scripts/jobs.py cancel out/enriched.progress.json     # graceful stop of the live run
  python scripts/jobs.py serve out/                            # the dashboard: open the link it prints

A CHECKPOINT is a job's progress file (<output stem>.progress.json); its output CSV, or a folder
holding one job, names it too.

exit codes: 0 done, 1 `validate` found defects or `cancel` stopped nothing, 2 bad arguments or no
            such / corrupt checkpoint (one line on stderr)
"""

COMMANDS: dict[str, tuple[str, str]] = {
    "status": ("a job's state, progress, counts, tokens, cost, rate, ETA, pace and last error",
               "python scripts/jobs.py status out/enriched.progress.json\n  python scripts/jobs.py status --json"),
    "list": ("jobs found under DIR (default: .), newest first, one line each",
             "python scripts/jobs.py list out/\n  python scripts/jobs.py list --json"),
    "stats": ("totals across the jobs under DIR: records, success rate, tokens, cost, time",
              "python scripts/jobs.py stats out/"),
    "validate": ("prove a job's integrity from its input and output (exit 0 clean, 1 with the defects)",
                 "python scripts/jobs.py validate out/enriched.progress.json"),
    "missing": ("the input rows not yet done (pending and failed), as CSV",
                ("python scripts/jobs.py missing out/enriched.progress.json --output todo.csv\n"
                 "  python scripts/jobs.py missing out/enriched.progress.json --pending-only | wc -l")),
    "export": ("the output so far as JSONL, XLSX or CSV, values typed as the fields declare; safe while the "
               "run is writing",
               ("python scripts/jobs.py export out/enriched.progress.json --output enriched.xlsx\n"
                "  python scripts/jobs.py export out/enriched.progress.json --order input --output - | head")),
    "cancel": ("stop the live run gracefully (SIGINT: in-flight records finish, then `interrupted`)",
               "python scripts/jobs.py cancel out/enriched.progress.json --timeout 60"),
    "serve": ("a local web page (and JSON API) over the jobs under DIR: progress, errors, downloads, "
              "Cancel / Resume / Retry failed",
              "python scripts/jobs.py serve out/            # then open the link it prints (it carries the token)"),
}

_EXTRA = {
    "status": "\nstate is `running` only while the recorded PID is alive on this host; a run that died shows\n"
              "`interrupted`, one still setting up shows `starting`, one on another host `unknown`.\n"
              "rate and ETA: while a run is working, that run's own figures (records it did / its running\n"
              "time, the figures its log lines show); once stopped, the job's average over the running time\n"
              "of all its runs. Both are as of the last checkpoint write (every few seconds).\n",
    "validate": "\nchecks: the header is the one the job writes; no torn, ragged or duplicated row; each row's\n"
                "_record_id matches its values; every input record is in the output exactly once or failed.\n",
    "missing": "\nBy default both pending and failed records are listed (neither is in the output); the\n"
               "CSV has the input's columns only, so it can be enriched as an input of its own.\n",
    "export": "\nOnly whole rows are exported: a row the run is still writing is left for the next export.\n"
              "JSONL and XLSX: fields declared number/integer/boolean in the stages file are numbers and\n"
              "booleans, an empty enriched field is null, input columns stay text. --order input reads the\n"
              "rows back in the input's order (the output holds them in the order they finished).\n",
    "cancel": "\nexit codes: 0 the run stopped (its final state is printed), 1 no run is active for the job,\n"
              "the run is on another host, or it is still running after --timeout (cancel again to stop it\n"
              "at once: like a second Ctrl+C, in-flight records are abandoned and redone on --resume).\n",
    "serve": "\nEvery request needs the server's token: open the URL printed at start once (the page then keeps\n"
             "a session cookie); scripts send `Authorization: Bearer <token>`. The token is new at each\n"
             "start, or ENRICHKIT_DASHBOARD_TOKEN (at least 16 characters; needed with a --host other than\n"
             "loopback). Only job files you own are acted on or served. Resume and Retry start\n"
             "`python -m enrichkit --input I --output O --resume` detached, in the folder the job was\n"
             "started from, its output appended to <output stem>.run.log.\n",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"jobs: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog=commands.prog(commands.JOBS),
                description="Watch and steer enrichkit jobs from outside: each command reads only the files\na job "
                            "writes (checkpoint, output, input); none of them disturbs a live run.",
                epilog=commands.with_shown_names(EXAMPLES), formatter_class=raw)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    cmd = {}
    for name, (summary, example) in COMMANDS.items():
        cmd[name] = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                                   epilog=commands.with_shown_names(f"example:\n  {example}\n{_EXTRA.get(name, '')}"),
                                   formatter_class=raw)
    checkpoint_help = "the job's *.progress.json (or its output CSV, or a folder holding one job)"
    cmd["status"].add_argument("checkpoint", nargs="?", metavar="CHECKPOINT",
                               help=checkpoint_help + "; default: the one job under the current folder")
    for name in ("list", "stats", "serve"):
        cmd[name].add_argument("dir", nargs="?", default=".", metavar="DIR", help="where to look (default: .)")
    for name in ("validate", "missing", "export", "cancel"):
        cmd[name].add_argument("checkpoint", metavar="CHECKPOINT", help=checkpoint_help)
    for name in ("status", "list", "stats", "validate"):
        cmd[name].add_argument("--json", action="store_true", help="print JSON instead of text")
    m = cmd["missing"]
    m.add_argument("--output", metavar="PATH", help="write the CSV here (default: stdout)")
    m.add_argument("--pending-only", action="store_true", help="leave out the records that failed")
    m.add_argument("--annotate", action="store_true",
                   help="add _row, _record_id and _state (pending|failed) columns (the file then no longer "
                        "has the input's columns only, so its record IDs differ if fed back as an input)")
    e = cmd["export"]
    e.add_argument("--format", choices=("jsonl", "xlsx", "csv"), help="default: from the --output extension")
    e.add_argument("--output", required=True, metavar="PATH", help="where to write ('-' = stdout, jsonl/csv)")
    e.add_argument("--order", choices=("output", "input"), default="output",
                   help="output: as the rows finished (default); input: in the input's order")
    cmd["cancel"].add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                               help="how long to wait for the run to stop (default: %(default)s)")
    s = cmd["serve"]
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    s.add_argument("--port", type=int, default=8765, help="port (default: %(default)s; 0 picks a free one)")
    s.add_argument("--token", help=argparse.SUPPRESS)  # refused: a command line is visible to every user
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; returns the exit code (never raises for a user error)."""
    settle_streams()
    args = build_parser().parse_args(argv)
    return error_edge("jobs", lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return HANDLERS[args.command](args)
    except AmbiguousJob as exc:
        sys.stderr.write(f"jobs: error: {exc}:\n")
        jobs, broken = load_sorted(exc.found)
        items: list[JobStatus | tuple[Path, str]] = [*jobs, *broken]
        for item in items:
            sys.stderr.write(f"  {views.list_line(item)}\n")
        return EXIT_USAGE


# --- status, list, stats ---------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    job = load_status(resolve_checkpoint(args.checkpoint))
    _print(job.to_json() if args.json else views.status_text(job))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    root = _existing_dir(args.dir)
    jobs, broken = load_sorted(find_checkpoints(root))
    if args.json:
        _print([*(j.to_json() for j in jobs),
                *({"checkpoint": str(p), "state": "unreadable", "error": e} for p, e in broken)])
        return EXIT_OK
    if not jobs and not broken:
        sys.stderr.write(f"no jobs under {root}\n")
        return EXIT_OK
    print(views.LIST_HEADER)
    items: list[JobStatus | tuple[Path, str]] = [*jobs, *broken]
    for item in items:
        print(views.list_line(item))
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    root = _existing_dir(args.dir)
    t = totals([j for j in load_all(find_checkpoints(root)) if isinstance(j, JobStatus)])
    _print(t if args.json else views.stats_text(t))
    return EXIT_OK


# --- validate, missing, export ---------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from enrichkit.jobs.audit import validate_job

    result = validate_job(load_status(resolve_checkpoint(args.checkpoint)))
    _print(result.to_json() if args.json else views.validation_text(result))
    return EXIT_OK if result.ok else EXIT_FAILURES


def cmd_missing(args: argparse.Namespace) -> int:
    from enrichkit.jobs.audit import MissingCount, checked_target, missing_records, open_input
    from enrichkit.jobs.export import CsvRows, write_text_file

    job = load_status(resolve_checkpoint(args.checkpoint))
    table = open_input(job)
    columns = list(table.columns) + (["_row", "_record_id", "_state"] if args.annotate else [])
    count = MissingCount()

    def write(f: IO[str]) -> None:
        out = CsvRows(f)
        out.write(columns)
        for record, record_id, state in missing_records(job, table, include_failed=not args.pending_only,
                                                        count=count):
            extra = [str(record.row), record_id, state] if args.annotate else []
            out.write([*record.values.values(), *extra])

    if args.output:
        where = str(write_text_file(checked_target(args.output, job.paths), write, newline=""))
    else:
        where = "stdout"
        write(sys.stdout)
        sys.stdout.flush()
    listed = count.pending + (0 if args.pending_only else count.failed)
    parts = [f"{count.pending} pending"] + ([f"{count.failed} failed"] if not args.pending_only else [])
    note = f"; {count.failed} failed left out (--pending-only)" if args.pending_only and count.failed else ""
    bad = f"; {count.unreadable} unreadable input row(s) are not records (see the error log)" \
        if count.unreadable else ""
    sys.stderr.write(f"{listed} record(s) not done ({', '.join(parts)}) written to {where}{note}{bad}\n")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from enrichkit.jobs.audit import checked_target
    from enrichkit.jobs.export import export_job

    job = load_status(resolve_checkpoint(args.checkpoint))
    fmt = args.format or ("jsonl" if args.output == "-" else Path(args.output).suffix.lower().lstrip("."))
    if fmt not in ("jsonl", "xlsx", "csv"):
        raise UsageError(f"cannot tell the format from {args.output}; add --format jsonl, xlsx or csv")
    if args.output == "-":
        if fmt == "xlsx":
            raise UsageError("only --format jsonl or csv can go to stdout (--output -)")
        result = export_job(job, fmt, sys.stdout, order=args.order)
        sys.stdout.flush()
        where = "stdout"
    else:
        where = args.output
        result = export_job(job, fmt, checked_target(args.output, job.paths), order=args.order)
    notes = []
    if job.state in ACTIVE:
        notes.append("the job is running: these are the rows so far")
    if args.order == "input":
        notes.append("in input order")
    if result.strays:
        notes.append(f"{result.strays} row(s) of no current input record at the end")
    if result.skipped:
        notes.append(f"{result.skipped} malformed row(s) skipped")
    if fmt != "csv" and not result.typed_from:
        notes.append("the stages file could not be read: enriched fields are text")
    elif result.untyped:
        notes.append(f"{result.untyped} value(s) kept as text (not of their declared type)")
    extra = f" ({'; '.join(notes)})" if notes else ""
    sys.stderr.write(f"exported {result.rows} row(s) of {job.cp.job_id} to {where}{extra}\n")
    return EXIT_OK


# --- cancel, serve ----------------------------------------------------------------------------------


def cmd_cancel(args: argparse.Namespace) -> int:
    from enrichkit.jobs.control import stop_run

    def waiting(pid: int) -> None:
        sys.stderr.write(f"asked PID {pid} to stop; waiting up to {args.timeout:g} s for in-flight records to "
                         "finish and the checkpoint to be written...\n")

    result = stop_run(resolve_checkpoint(args.checkpoint), args.timeout, on_signal=waiting)
    job, pid = result.job, result.pid
    if result.outcome == "elsewhere":
        print(f"the run of {job.cp.job_id} is on host {job.cp.host}; cancel it there")
    elif result.outcome == "none":
        print(f"no run is active for {job.cp.job_id} (state: {job.state})")
    elif result.outcome == "untrusted":
        print(f"not signalling anything for {job.cp.job_id}: {result.why}")
    elif result.outcome == "denied":
        print(f"not allowed to signal PID {pid} (another user's process); stop it as that user")
    elif result.outcome == "timeout":
        print(f"PID {pid} is still running after {args.timeout:g} s (finishing in-flight records?); "
              f"run it again to stop it at once: {cancel_command(job.paths.checkpoint)}")
    else:
        print(f"stopped: {job.cp.job_id} is {job.state}: {job.done} done, {job.failed} failed, {job.pending} pending")
        _google_jobs_go_on(job)
        if job.can_resume:
            print("continue with: " + job.command())
        return EXIT_OK
    _google_jobs_go_on(job)
    return EXIT_FAILURES


def _google_jobs_go_on(job: Any) -> None:
    """`cancel` stops the local run only: a batch job's Google jobs keep running (and are billed)."""
    flying = int((job.cp.batch or {}).get("jobs_in_flight") or 0)
    if flying:
        print(f"{flying} Google batch job(s) of this job keep running at Google (billed when they finish): "
              f"{job.command()} collects them; add --cancel-batches to cancel them")


def cmd_serve(args: argparse.Namespace) -> int:
    from enrichkit.jobs.server import TOKEN_ENV, serve

    if args.token is not None:
        raise UsageError(f"--token on the command line is visible to every user in `ps`: set {TOKEN_ENV} in the "
                         "environment instead (at least 16 characters)")
    return serve(_existing_dir(args.dir), host=args.host, port=args.port)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": cmd_status, "list": cmd_list, "stats": cmd_stats, "validate": cmd_validate,
    "missing": cmd_missing, "export": cmd_export, "cancel": cmd_cancel, "serve": cmd_serve,
}


# --- helpers ------------------------------------------------------------------------------------------


def _print(data: Any) -> None:
    if isinstance(data, str):
        print(data)
    else:
        print(json.dumps(data, indent=2, ensure_ascii=False))


def _existing_dir(arg: str) -> Path:
    path = Path(arg)
    if not path.is_dir():
        raise UsageError(f"{arg}: no such folder")
    return path
