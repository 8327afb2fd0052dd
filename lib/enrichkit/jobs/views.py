"""The text `jobs.py` prints: a job's status, a line per job for `list`, the `stats` table and the
`validate` verdict. Pure functions of what `enrichkit.jobs.state` and `.audit` read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enrichkit.commands import cancel_command
from enrichkit.config.lifecycle import notes_lines
from enrichkit.jobs.audit import Validation
from enrichkit.jobs.state import ACTIVE, JobStatus, duration_text
from enrichkit.run.progress import format_duration

LIST_HEADER = (f"{'UPDATED':<20}  {'STATE':<23}  {'DONE':>13}  {'FAILED':>6}  {'COST':>9}  {'JOB':<29}  "
               "CHECKPOINT")


def show_path(path: Path, cwd: Path | None = None) -> str:
    """`path` relative to the current folder when it is under it (shorter commands to copy)."""
    try:
        return str(path.resolve().relative_to((cwd or Path.cwd()).resolve()))
    except (ValueError, OSError):
        return str(path)


def status_text(job: JobStatus) -> str:
    """The text of `jobs.py status`."""
    cp, t = job.cp, job.cp.totals
    state = job.state
    if job.active_pid:
        state += f" (PID {job.active_pid} on {cp.host})"
    elif job.state == "unknown":
        state += f" (the checkpoint says running on {cp.host}; this host cannot check that PID)"
    elif cp.status == "running":
        state += f" (the run, PID {cp.pid}, is gone: killed or crashed)"
    ago = job.updated_ago()
    rate = job.records_per_min
    window = "this run" if job.rate_window == "run" else "job average"
    cost = f"${t.cost_usd:.4f}"
    if t.grounding_cost_usd:
        cost += f" (${t.token_cost_usd:.4f} tokens + ${t.grounding_cost_usd:.4f} grounding)"
    lines = [
        ("job", cp.job_id),
        ("state", state),
        ("progress", (f"{job.progress_pct:.1f}%  {job.done} done, {job.failed} failed, {job.pending} pending "
                      f"of {job.total}")),
        ("tokens", f"{t.total_tokens:,} ({t.prompt_tokens:,} in, {t.output_tokens:,} out"
                   + (f", of which {t.thinking_tokens:,} thinking)" if t.thinking_tokens else ")")),
        ("cost", cost),
        ("requests", f"{t.requests:,} ({t.retries:,} retries, {t.rate_limited:,} rate-limited, "
                     f"{t.cache_hits:,} cache hits)"),
        ("rate", f"{rate:.1f} records/min ({window})" if rate is not None else "-"),
        ("ETA" if job.state == "running" else "time left", format_duration(job.eta_seconds) if job.pending else "-"),
    ]
    lines += [("pace", text) for text in pace_lines(cp.pace)]
    lines += [("models", text) for text in notes_lines(cp.models)]
    if cp.batch:
        b = cp.batch
        lines.append(("batch", f"{b.get('jobs_in_flight', 0)} Google job(s) in flight holding "
                               f"{b.get('records_in_flight', 0)} requests, {b.get('jobs_total', 0)} in all; "
                               f"${b.get('spent_usd', 0):.4f} answered"))
        lines += [("", f"{j.get('display_name')}: {j.get('google_state') or j.get('state')} ({j.get('lines')} "
                       f"requests, stage {j.get('stage')})") for j in b.get("jobs", []) if j.get("state") in
                  ("planned", "uploaded", "creating", "submitted")]
    lines += [
        ("started", cp.started_at),
        ("updated", cp.last_updated + (f" ({duration_text(ago)} ago)" if ago is not None else "")),
        ("last error", error_text(job.last_error)),
        ("input", str(job.paths.input)),
        ("output", str(job.paths.output)),
        ("can_resume", next_step(job)),
    ]
    return "\n".join(f"{key:<11} {value}" for key, value in lines)


def pace_lines(pace: dict[str, Any]) -> list[str]:
    """One line per model: the pace now against the configured one, and what the 429s cost."""
    out = []
    for model, p in sorted(pace.items()):
        if not isinstance(p, dict):
            continue
        configured, current = p.get("rpm"), p.get("current_rpm")
        if not isinstance(configured, (int, float)):
            text = f"{model}: no rpm limit"
        elif isinstance(current, (int, float)):
            text = f"{model}: {current:g}/{configured:g} rpm"
        else:
            text = f"{model}: {configured:g} rpm"
        extra = []
        if p.get("pauses"):
            extra.append(f"{p['pauses']} pause(s), {float(p.get('paused_seconds') or 0):.0f} s paused")
        if p.get("decreases"):
            extra.append(f"cut {p['decreases']} time(s)")
        out.append(text + (f" ({', '.join(extra)})" if extra else ""))
    return out


def error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return "-"
    where = ", ".join(f"{k} {error[k]}" for k in ("row", "stage") if error.get(k) is not None)
    message = " ".join(str(error.get("message", "")).split())
    text = f"{error.get('error_type', '?')}: {message[:160]}"
    return f"{where}: {text} ({error.get('at', '')})" if where else f"{text} ({error.get('at', '')})"


def next_step(job: JobStatus) -> str:
    if job.state in ACTIVE:
        return f"no: a run is active; stop it with: {cancel_command(job.paths.checkpoint)}"
    if job.state == "unknown":
        return "unknown: look on the host that runs it"
    command = job.next_command
    if command is None:
        return "no: nothing left to do"
    if not job.can_resume:
        return "no, nothing pending; retry the failures: " + command
    if job.state == "budget_exhausted":
        return f"yes, with a higher budget: {command}"
    if job.state == "failed":
        return f"yes, once the cause is fixed: {command}"
    return f"yes: {command}"


def list_line(item: JobStatus | tuple[Path, str]) -> str:
    if not isinstance(item, JobStatus):
        path, reason = item
        reason = reason.removeprefix(f"{path}: ")
        return f"{'?':<20}  {'unreadable':<23}  {'':>13}  {'':>6}  {'':>9}  {'?':<29}  {show_path(path)}: {reason}"
    j = item
    done = f"{j.done}/{j.total} {j.progress_pct:>5.1f}%"
    cost = f"${j.cp.totals.cost_usd:.4f}"
    return (f"{j.cp.last_updated:<20}  {j.state:<23}  {done:>13}  {j.failed:>6}  {cost:>9}  "
            f"{j.cp.job_id:<29}  {show_path(j.paths.checkpoint)}")


def stats_text(t: dict[str, Any]) -> str:
    states = ", ".join(f"{s} {n}" for s, n in t["states"].items())
    rate = f" ({t['records_per_min']:.1f} records/min)" if t["records_per_min"] is not None else ""
    success = "-"
    if t["done"] + t["failed"]:
        pct = f"{100 * t['done'] / (t['done'] + t['failed']):.1f}"
        pct = "99.9" if pct == "100.0" and t["failed"] else pct  # never "100.0%" while something failed
        success = f"{pct}% of the records tried"
    cost = f"${t['cost_usd']:.4f}"
    if t["grounding_cost_usd"]:
        cost += f" (${t['token_cost_usd']:.4f} tokens + ${t['grounding_cost_usd']:.4f} grounding)"
    lines = [
        ("jobs", f"{t['jobs']}" + (f" ({states})" if states else "")),
        ("records", f"{t['records']:,} in all: {t['done']:,} done, {t['failed']:,} failed, {t['pending']:,} pending"),
        ("success", success),
        ("tokens", f"{t['total_tokens']:,}"),
        ("cost", cost),
        ("time", f"{format_duration(t['elapsed_seconds'])} of running time{rate}"),
        ("requests", f"{t['requests']:,} ({t['rate_limited']:,} rate-limited)"),
    ]
    return "\n".join(f"{key:<9} {value}" for key, value in lines)


def validation_text(result: Validation) -> str:
    if result.ok:
        lines = [f"valid: {result.job_id}: {result.input_records} input records, {result.output_rows} in the output "
                 f"exactly once, {result.failed} failed; no torn, ragged or duplicated row"]
    else:
        count = sum(d.count for d in result.defects)
        lines = [f"INVALID: {result.job_id}: {count} defect(s)"]
        lines += [f"  - {defect.kind}: {defect.message}" for defect in result.defects]
    lines += [f"  note: {note}" for note in result.notes]
    return "\n".join(lines)
