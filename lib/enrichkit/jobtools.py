"""`scripts/jobs.py`: watch and steer jobs from outside, reading only the files a job writes.

Subcommands: status, list, stats, validate, missing, export, cancel. Errors the user can act on are
one line on stderr and exit 2; `validate` exits 1 on a defect, `cancel` exits 1 when no run stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from enrichkit.errors import EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, EnrichError, UsageError
from enrichkit.jobstate import (
    AmbiguousJob,
    JobStatus,
    find_checkpoints,
    load_all,
    load_status,
    newest_first,
    resolve_checkpoint,
    stop_run,
    totals,
)
from enrichkit.progress import format_duration

EXAMPLES = """\
examples:
  python scripts/jobs.py status                                # the one job under this folder
  python scripts/jobs.py status out/enriched.progress.json --json
  python scripts/jobs.py list out/                             # every job under out/, newest first
  python scripts/jobs.py validate out/enriched.progress.json   # exit 0 clean, 1 with the defects
  python scripts/jobs.py cancel out/enriched.progress.json     # graceful stop of the live run

A CHECKPOINT is a job's progress file (<output stem>.progress.json); its output CSV, or a folder
holding one job, names it too.

exit codes: 0 done, 1 `validate` found defects or `cancel` stopped nothing, 2 bad arguments or no
            such / corrupt checkpoint (one line on stderr)
"""

COMMANDS: dict[str, tuple[str, str]] = {
    "status": ("a job's state, progress, counts, tokens, cost, rate, ETA and last error",
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
    "export": ("the output so far as JSONL or XLSX, safe while the run is writing",
               "python scripts/jobs.py export out/enriched.progress.json --format xlsx --output enriched.xlsx"),
    "cancel": ("stop the live run gracefully (SIGINT: in-flight records finish, then `interrupted`)",
               "python scripts/jobs.py cancel out/enriched.progress.json --timeout 60"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"jobs: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="jobs.py", description="Watch and steer enrichkit jobs from outside: each command reads only "
                "the files\na job writes (checkpoint, output, input); none of them disturbs a live run.",
                epilog=EXAMPLES, formatter_class=raw)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    cmd = {}
    for name, (summary, example) in COMMANDS.items():
        cmd[name] = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                                   epilog=f"example:\n  {example}\n{_EXTRA.get(name, '')}", formatter_class=raw)
    checkpoint_help = "the job's *.progress.json (or its output CSV, or a folder holding one job)"
    cmd["status"].add_argument("checkpoint", nargs="?", metavar="CHECKPOINT",
                               help=checkpoint_help + "; default: the one job under the current folder")
    for name in ("list", "stats"):
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
    e.add_argument("--format", choices=("jsonl", "xlsx"), help="default: from the --output extension")
    e.add_argument("--output", required=True, metavar="PATH", help="where to write ('-' = stdout, jsonl only)")
    cmd["cancel"].add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                               help="how long to wait for the run to stop (default: %(default)s)")
    return p


_EXTRA = {
    "status": "\nstate is `running` only while the recorded PID is alive on this host; a run that died shows\n"
              "`interrupted`, one still setting up shows `starting`, one on another host `unknown`.\n",
    "validate": "\nchecks: the header is the one the job writes; no torn, ragged or duplicated row; each row's\n"
                "_record_id matches its values; every input record is in the output exactly once or failed.\n",
    "missing": "\nBy default both pending and failed records are listed (neither is in the output); the\n"
               "CSV has the input's columns only, so it can be enriched as an input of its own.\n",
    "export": "\nOnly whole rows are exported: a row the run is still writing is left for the next export.\n",
    "cancel": "\nexit codes: 0 the run stopped (its final state is printed), 1 no run is active for the job,\n"
              "the run is on another host, or it is still running after --timeout (cancel again to stop it\n"
              "at once: like a second Ctrl+C, in-flight records are abandoned and redone on --resume).\n",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; returns the exit code (never raises for a user error)."""
    args = build_parser().parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except AmbiguousJob as exc:
        sys.stderr.write(f"jobs: error: {exc}:\n")
        jobs, broken = _load_sorted(exc.found)
        for item in [*jobs, *broken]:
            sys.stderr.write(f"  {_line(item)}\n")
        return EXIT_USAGE
    except EnrichError as exc:
        _debug_traceback()
        sys.stderr.write(f"jobs: error: {exc}\n")
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`missing ... | head`): stop quietly, without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURES
    except KeyboardInterrupt:
        sys.stderr.write("jobs: interrupted\n")
        return EXIT_INTERRUPTED
    except OSError as exc:
        _debug_traceback()
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"jobs: error: {where}{exc.strerror or exc}\n")
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the last guard: one line, never a traceback (ENRICHKIT_DEBUG=1)
        _debug_traceback()
        sys.stderr.write(f"jobs: internal error: {exc!r:.300} (a bug: rerun with ENRICHKIT_DEBUG=1 for the "
                         "traceback and report it)\n")
        return EXIT_USAGE


# --- status, list, stats ---------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    job = load_status(resolve_checkpoint(args.checkpoint))
    _print(job.to_json() if args.json else describe(job))
    return EXIT_OK


def describe(job: JobStatus) -> str:
    """The text of `jobs.py status`."""
    cp = job.cp
    state = job.state
    if job.active_pid:
        state += f" (PID {job.active_pid} on {cp.host})"
    elif job.state == "unknown":
        state += f" (the checkpoint says running on {cp.host}; this host cannot check that PID)"
    elif cp.status == "running":
        state += f" (the run, PID {cp.pid}, is gone: killed or crashed)"
    ago = job.updated_ago()
    rate = job.records_per_min
    eta = format_duration(job.eta_seconds)
    lines = [
        ("job", cp.job_id),
        ("state", state),
        ("progress", (f"{job.progress_pct:.1f}%  {job.done} done, {job.failed} failed, {job.pending} pending "
                      f"of {job.total}")),
        ("tokens", f"{cp.total_tokens:,} ({cp.prompt_tokens:,} in, {cp.output_tokens:,} out)"),
        ("cost", f"${cp.cost_usd:.4f} ({cp.requests:,} requests, {cp.rate_limited:,} rate-limited)"),
        ("rate", f"{rate:.1f} records/min" if rate is not None else "-"),
        ("ETA" if job.state == "running" else "time left", eta if job.pending else "-"),
        ("started", cp.started_at),
        ("updated", cp.last_updated + (f" ({_age(ago)} ago)" if ago is not None else "")),
        ("last error", _error_text(job.last_error)),
        ("input", str(job.paths.input)),
        ("output", str(job.paths.output)),
        ("can_resume", _next_step(job)),
    ]
    return "\n".join(f"{key:<11} {value}" for key, value in lines)


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return "-"
    where = ", ".join(f"{k} {error[k]}" for k in ("row", "stage") if error.get(k) is not None)
    message = " ".join(str(error.get("message", "")).split())
    text = f"{error.get('error_type', '?')}: {message[:160]}"
    return f"{where}: {text} ({error.get('at', '')})" if where else f"{text} ({error.get('at', '')})"


def _next_step(job: JobStatus) -> str:
    checkpoint = _show(job.paths.checkpoint)
    if job.state in ("running", "starting"):
        return f"no: a run is active; stop it with: python scripts/jobs.py cancel {checkpoint}"
    if job.state == "unknown":
        return "unknown: look on the host that runs it"
    if job.can_resume:
        command = "python scripts/enrich.py " + shlex.join(job.resume_args())
        if job.state == "budget_exhausted":
            return f"yes, with a higher budget: {command} --max-cost USD"
        if job.state == "failed":
            return f"yes, once the API key works: {command}"
        return f"yes: {command}"
    if job.can_retry_failed:
        return ("no, nothing pending; retry the failures: python scripts/enrich.py "
                + shlex.join(job.resume_args("--retry-failed")))
    return "no: nothing left to do"


def cmd_list(args: argparse.Namespace) -> int:
    root = _existing_dir(args.dir)
    jobs, broken = _load_sorted(find_checkpoints(root))
    if args.json:
        _print([*(j.to_json() for j in jobs), *({"checkpoint": str(p), "error": e} for p, e in broken)])
        return EXIT_OK
    if not jobs and not broken:
        sys.stderr.write(f"no jobs under {root}\n")
        return EXIT_OK
    print(f"{'UPDATED':<20}  {'STATE':<23}  {'DONE':>13}  {'FAILED':>6}  {'COST':>9}  {'JOB':<29}  CHECKPOINT")
    for item in [*jobs, *broken]:
        print(_line(item))
    return EXIT_OK


def _load_sorted(paths: list[Path]) -> tuple[list[JobStatus], list[tuple[Path, str]]]:
    """The readable jobs newest first, and the unreadable checkpoints with the reason."""
    loaded = list(load_all(paths))
    jobs = newest_first([j for j in loaded if isinstance(j, JobStatus)])
    return jobs, [j for j in loaded if not isinstance(j, JobStatus)]


def _line(item: JobStatus | tuple[Path, str]) -> str:
    if not isinstance(item, JobStatus):
        path, reason = item
        reason = reason.removeprefix(f"{path}: ")
        return f"{'?':<20}  {'unreadable':<23}  {'':>13}  {'':>6}  {'':>9}  {'?':<29}  {_show(path)}: {reason}"
    j = item
    done = f"{j.done}/{j.total} {j.progress_pct:>5.1f}%"
    cost = f"${j.cp.cost_usd:.4f}"
    return (f"{j.cp.last_updated:<20}  {j.state:<23}  {done:>13}  {j.failed:>6}  {cost:>9}  "
            f"{j.cp.job_id:<29}  {_show(j.paths.checkpoint)}")


def cmd_stats(args: argparse.Namespace) -> int:
    root = _existing_dir(args.dir)
    jobs = [j for j in load_all(find_checkpoints(root)) if isinstance(j, JobStatus)]
    t = totals(jobs)
    if args.json:
        _print(t)
        return EXIT_OK
    states = ", ".join(f"{s} {n}" for s, n in t["states"].items())
    rate = f" ({t['records_per_min']:.1f} records/min)" if t["records_per_min"] is not None else ""
    success = "-"
    if t["done"] + t["failed"]:
        pct = f"{100 * t['done'] / (t['done'] + t['failed']):.1f}"
        pct = "99.9" if pct == "100.0" and t["failed"] else pct  # never "100.0%" while something failed
        success = f"{pct}% of the records tried"
    lines = [
        ("jobs", f"{t['jobs']}" + (f" ({states})" if states else "")),
        ("records", f"{t['records']:,} in all: {t['done']:,} done, {t['failed']:,} failed, {t['pending']:,} pending"),
        ("success", success),
        ("tokens", f"{t['total_tokens']:,}"),
        ("cost", f"${t['cost_usd']:.4f}"),
        ("time", f"{format_duration(t['elapsed_seconds'])} of running time{rate}"),
        ("requests", f"{t['requests']:,} ({t['rate_limited']:,} rate-limited)"),
    ]
    print("\n".join(f"{key:<9} {value}" for key, value in lines))
    return EXIT_OK


# --- validate, missing, export ---------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from enrichkit.jobaudit import validate_job

    job = load_status(resolve_checkpoint(args.checkpoint))
    result = validate_job(job)
    if args.json:
        _print(result.to_json())
    elif result.ok:
        print(f"valid: {result.job_id}: {result.input_records} input records, {result.output_rows} in the output "
              f"exactly once, {result.failed} failed; no torn, ragged or duplicated row")
    else:
        count = sum(d.count for d in result.defects)
        print(f"INVALID: {result.job_id}: {count} defect(s)")
        for defect in result.defects:
            print(f"  - {defect.kind}: {defect.message}")
    if not args.json:
        for note in result.notes:
            print(f"  note: {note}")
    return EXIT_OK if result.ok else EXIT_FAILURES


def cmd_missing(args: argparse.Namespace) -> int:
    from enrichkit.jobaudit import (
        MissingCount,
        checked_target,
        missing_records,
        open_input,
        text_file,
        write_atomically,
    )

    job = load_status(resolve_checkpoint(args.checkpoint))
    table = open_input(job)
    columns = list(table.columns) + (["_row", "_record_id", "_state"] if args.annotate else [])
    count = MissingCount()

    def write(f: IO[str]) -> None:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(columns)
        for record, record_id, state in missing_records(job, table, include_failed=not args.pending_only,
                                                        count=count):
            extra = [str(record.row), record_id, state] if args.annotate else []
            out.writerow([*record.values.values(), *extra])

    if args.output:
        where = write_atomically(checked_target(args.output, job.paths), text_file(write, newline=""))
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
    from enrichkit.jobaudit import WholeRows, checked_target, text_file, write_atomically

    job = load_status(resolve_checkpoint(args.checkpoint))
    fmt = args.format or ("jsonl" if args.output == "-" else Path(args.output).suffix.lower().lstrip("."))
    if fmt not in ("jsonl", "xlsx"):
        raise UsageError(f"cannot tell the format from {args.output}; add --format jsonl or --format xlsx")
    if args.output == "-" and fmt != "jsonl":
        raise UsageError("only --format jsonl can go to stdout (--output -)")
    if not job.paths.output.exists():
        raise UsageError(f"{job.paths.output}: the job has written no output yet")
    source = WholeRows(job.paths.output)
    rows = 0

    def write_jsonl(f: IO[str]) -> None:
        nonlocal rows
        for fields in source.rows():
            f.write(json.dumps(dict(zip(source.header, fields, strict=True)), ensure_ascii=False) + "\n")
            rows += 1

    if fmt == "jsonl" and args.output == "-":
        write_jsonl(sys.stdout)
        sys.stdout.flush()
        where = "stdout"
    elif fmt == "jsonl":
        where = write_atomically(checked_target(args.output, job.paths), text_file(write_jsonl))
    else:
        from enrichkit.jobaudit import write_xlsx

        where = args.output
        rows = write_xlsx(source, checked_target(args.output, job.paths))
    live = " (the job is running: these are the rows so far)" if job.state in ("running", "starting") else ""
    skipped = f"; {source.skipped} malformed row(s) skipped" if source.skipped else ""
    sys.stderr.write(f"exported {rows} row(s) of {job.cp.job_id} to {where}{live}{skipped}\n")
    return EXIT_OK


# --- cancel -----------------------------------------------------------------------------------------


def cmd_cancel(args: argparse.Namespace) -> int:
    def waiting(pid: int) -> None:
        sys.stderr.write(f"asked PID {pid} to stop; waiting up to {args.timeout:g} s for in-flight records to "
                         "finish and the checkpoint to be written...\n")

    result = stop_run(resolve_checkpoint(args.checkpoint), args.timeout, on_signal=waiting)
    job, pid = result.job, result.pid
    if result.outcome == "elsewhere":
        print(f"the run of {job.cp.job_id} is on host {job.cp.host}; cancel it there")
    elif result.outcome == "none":
        print(f"no run is active for {job.cp.job_id} (state: {job.state})")
    elif result.outcome == "denied":
        print(f"not allowed to signal PID {pid} (another user's process); stop it as that user")
    elif result.outcome == "timeout":
        print(f"PID {pid} is still running after {args.timeout:g} s (finishing in-flight records?); "
              "run cancel again to stop it at once")
    else:
        print(f"stopped: {job.cp.job_id} is {job.state}: {job.done} done, {job.failed} failed, {job.pending} pending")
        if job.can_resume:
            print("continue with: python scripts/enrich.py " + shlex.join(job.resume_args()))
        return EXIT_OK
    return EXIT_FAILURES


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": cmd_status, "list": cmd_list, "stats": cmd_stats, "validate": cmd_validate,
    "missing": cmd_missing, "export": cmd_export, "cancel": cmd_cancel,
}


# --- helpers ------------------------------------------------------------------------------------------


def _print(data: Any) -> None:
    if isinstance(data, str):
        print(data)
    else:
        print(json.dumps(data, indent=2, ensure_ascii=False))


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else format_duration(seconds)


def _existing_dir(arg: str) -> Path:
    path = Path(arg)
    if not path.is_dir():
        raise UsageError(f"{arg}: no such folder")
    return path


def _debug_traceback() -> None:
    if os.environ.get("ENRICHKIT_DEBUG"):
        traceback.print_exc()
