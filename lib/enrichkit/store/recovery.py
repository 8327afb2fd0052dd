"""Opening a job's files on start: what the checkpoint means (a new job, a resume, a retry of the failures,
a fresh start), proof that it belongs to this job, and the output read back and merged (the output is
the truth; the checkpoint is bookkeeping). `recover_job` gives the `RecoveredJob` a run starts from."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enrichkit.config.configdiff import describe_change
from enrichkit.config.plan import JobMode, Plan
from enrichkit.errors import ConfigError, UsageError
from enrichkit.logs import log
from enrichkit.store.checkpoint import Checkpoint, new_job_id, read_checkpoint
from enrichkit.store.jobfiles import remove_stale_temps, same_file
from enrichkit.store.output import ID_COLUMN
from enrichkit.store.readback import recover_output
from enrichkit.store.resumemark import ResumeMark
from enrichkit.tables.precount import count_small_input


@dataclass
class RecoveredJob:
    """What a run starts from: the checkpoint as the output proved it, the mode, and what the start found."""

    cp: Checkpoint
    mode: JobMode
    input_changed: bool = False
    adopted: set[str] = field(default_factory=set)  # job ids of rows already in the output when this job began
    output_crc32: int = 0  # of the output as it is now (after any cut)


def recover_job(plan: Plan, *, confirm_fresh: Callable[[str], bool] = lambda message: False,
                relock: Callable[[], None] = lambda: None) -> RecoveredJob:
    """Decide the mode, check the checkpoint belongs to this job, read the output back and merge it.
    Raises `UsageError`/`ConfigError` (exit 2) before anything is written; may cut a torn last row."""
    options, paths = plan.options, plan.paths
    for path in (paths.checkpoint, paths.report):
        remove_stale_temps(path)
    if _size(paths.output) and _foreign_output(paths.output):
        raise ConfigError(f"{paths.output}: exists but is not an enrichkit output (no {ID_COLUMN} column); choose "
                          "another --output (nothing was changed)")
    exists = paths.checkpoint.exists()
    if options.fresh:
        if exists or _size(paths.output):
            _fresh(plan, confirm_fresh)
            relock()
        exists = False
    elif not exists and options.retry_failed:
        raise UsageError(f"no checkpoint at {paths.checkpoint}: nothing to retry (run without --retry-failed "
                         "first)")
    elif exists and not (options.resume or options.retry_failed):
        raise UsageError(f"a job already exists for {paths.output} ({paths.checkpoint}); continue it with "
                         f"--resume, or delete it and its {_paid(plan)} with --fresh")
    elif not exists and not options.resume and _size(paths.output):
        raise UsageError(f"{paths.output} already exists; continue it with --resume (its rows are kept), or "
                         f"delete it and its {_paid(plan)} with --fresh")
    input_info = {"path": str(plan.table.path.resolve()), "size": plan.table.size, "mtime": plan.table.mtime}
    if not exists:
        cp = Checkpoint(job_id=new_job_id(), output=str(paths.output.resolve()), input=input_info,
                        stages=[s.name for s in plan.stages.stages], config_fingerprint=plan.fingerprint,
                        id_columns=options.id_columns, fields=plan.stages.output_fields,
                        stages_file=str(Path(options.stages_file).resolve()) if options.stages_file else "",
                        config=_config(plan))
        found = RecoveredJob(cp, JobMode.of(options, job_exists=False))
    else:
        cp = read_checkpoint(paths.checkpoint)
        changed = _check_identity(plan, cp, input_info)
        found = RecoveredJob(cp, JobMode.of(options, job_exists=True), changed,
                      set(cp.options.get("adopted_jobs") or []))
    _merge_output(plan, found)
    return found


def _merge_output(plan: Plan, found: RecoveredJob) -> None:
    """Read the output back (only past the checkpoint's mark when the bytes before it are unchanged) and make
    the checkpoint say what the output holds."""
    cp, paths = found.cp, plan.paths
    # The prefix is trusted only while the checkpoint's own ID lists are as it wrote them, by their digest (a
    # flipped digit or a swapped ID, or a list from an older version, means the output is read whole).
    crc = cp.output_crc32
    intact = crc is not None and cp.output_rows == cp.completed_count and cp.lists_intact()
    trusted = (cp.output_bytes, crc) if found.mode != JobMode.NEW and intact and crc is not None else None
    # Rows of this job that the checkpoint does not list were written after its last write (a crash between):
    # their cost was billed but is not in the checkpoint's totals; the rows say it (`_cost_usd`).
    booked = cp.completed_ids

    def unbooked(record_id: str, job_id: str) -> bool:
        return job_id == cp.job_id and record_id not in booked

    rec = recover_output(paths.output, plan.columns, plan.stages.output_fields, trusted,
                         unbooked if found.mode != JobMode.NEW else None)
    if rec.unbooked_usd:
        cp.totals.token_cost_usd += rec.unbooked_usd  # the split into tokens and grounding is not in the row
        log.info("added $%.6f to the job's cost: what %d row(s) written after its last checkpoint cost",
                 rec.unbooked_usd, rec.unbooked_rows)
    if rec.torn_bytes:
        log.warning("cut a torn last row (%d bytes) from %s: a crash interrupted its write; that record will "
                    "be done again", rec.torn_bytes, paths.output)
    if rec.bad_rows:
        log.warning("%s has %d malformed row(s) in the middle (edited by hand?); they are ignored",
                    paths.output, rec.bad_rows)
    foreign = set(rec.job_ids) - {cp.job_id} - found.adopted
    if found.mode == JobMode.NEW:
        found.adopted = set(rec.job_ids)  # rows of an earlier job on this output, kept as done
        cp.options["adopted_jobs"] = sorted(found.adopted)
    elif foreign and (rec.from_offset or cp.job_id not in rec.job_ids):
        raise ConfigError(f"{paths.output} holds rows of job {sorted(foreign)[0]}, but the checkpoint "
                          f"{paths.checkpoint} is of job {cp.job_id}: the checkpoint belongs to another "
                          "job; give each job its own --checkpoint")
    repeated = list(rec.repeated)
    lost = 0
    if rec.from_offset:
        repeated += [(record_id, 0) for record_id in rec.ids if record_id in cp.completed_ids]
        for record_id in rec.ids:  # rows written after the last checkpoint, before a crash
            cp.mark_completed(record_id)
        cp.filled = dict(Counter(cp.filled) + rec.filled)
    else:
        claimed = cp.completed_count if found.mode != JobMode.NEW else 0
        if claimed and not rec.rows:
            raise ConfigError(f"{paths.output} is missing or empty but the checkpoint lists {claimed} "
                              "finished records; restore the file, or start over with --fresh (which also "
                              f"forgets those {claimed} records and pays for them again)")
        lost = cp.completed_ids.count_not_in(rec.ids) if claimed else 0
        if lost:
            log.warning("%d record(s) the checkpoint lists as done are not in %s (rows deleted or edited?); "
                        "the output wins: they will be done again", lost, paths.output)
        elif claimed and trusted is not None:
            log.info("the output changed before the checkpoint's mark (edited or re-saved?); read it whole")
        elif claimed and cp.output_crc32 is not None and not intact:
            log.info("the checkpoint's list of done records was edited; the output was read whole")
        failed = {record_id for record_id in cp.failed_ids if record_id not in rec.ids}
        cp.completed_ids = rec.ids
        cp.failed_ids = failed
        cp.filled = dict(rec.filled)
    if not ResumeMark.kept_at_open(input_changed=found.input_changed, rows_lost=lost > 0,
                                   lists_trusted=trusted is not None):
        cp.resume_at = None
    if repeated:
        # enrichkit writes each record once; a second row of one was put there by hand. A run over it could
        # only end "Done" with an output that is not valid: say where, and let the user keep the right copy.
        lines = ", ".join(str(line) for _, line in repeated[:5] if line) or "after the checkpoint's mark"
        raise ConfigError(f"{paths.output} holds {len(repeated)} row(s) of a record that is already in it "
                          f"(lines {lines}: copied by hand?); remove the extra rows (`jobs.py validate` lists "
                          "them), then --resume")
    cp.output_bytes, cp.output_crc32, cp.output_rows = rec.size, rec.crc32, cp.completed_count
    found.output_crc32 = rec.crc32
    if found.mode == JobMode.NEW or found.input_changed:
        counts = count_small_input(plan.table, plan.id_columns)
        if counts is not None:
            cp.take_counts(counts)
        else:
            cp.total_records = max(cp.total_records, plan.table.estimate_rows())


def _config(plan: Plan) -> dict[str, Any]:
    return plan.stages.fingerprint_inputs(plan.options.id_columns, plan.options.model)


def _check_identity(plan: Plan, cp: Checkpoint, input_info: dict[str, Any]) -> bool:
    """The checkpoint belongs to this job: the same output, input and configuration. Returns whether the
    input's size or mtime changed (a warning, not an error: IDs are content hashes)."""
    options, paths = plan.options, plan.paths
    if cp.output and not same_file(Path(cp.output), paths.output):
        if not options.allow_config_change:
            raise ConfigError(f"the checkpoint {paths.checkpoint} belongs to the job writing {cp.output}, not "
                              f"{paths.output}; give this job its own --checkpoint (or --allow-config-change if "
                              "the output was moved)")
        log.warning("the checkpoint names %s; continuing with %s (--allow-config-change)", cp.output, paths.output)
        cp.output = str(paths.output.resolve())
    recorded_input = str(cp.input.get("path") or "")
    if recorded_input and not same_file(Path(recorded_input), plan.table.path):
        if not options.allow_config_change:
            raise ConfigError(f"the checkpoint {paths.checkpoint} is of a job reading {recorded_input}, not "
                              f"{plan.table.path}; use the job's input, or --allow-config-change if it was moved")
        log.warning("the job read %s; continuing with %s (--allow-config-change)", recorded_input, plan.table.path)
    if (cp.id_columns or None) != (options.id_columns or None):
        raise ConfigError(f"--id-columns cannot change within a job ({paths.checkpoint} uses "
                          f"{','.join(cp.id_columns) if cp.id_columns else 'every column'}): every record ID would "
                          "change and every record be done again; use a new --output for other IDs")
    if cp.config_fingerprint != plan.fingerprint and cp.fields and cp.fields != plan.stages.output_fields:
        # The output's columns would change: no flag can continue the job, so none is advised (the read-back would
        # refuse the output after "continuing").
        added = [f for f in plan.stages.output_fields if f not in cp.fields]
        gone = [f for f in cp.fields if f not in plan.stages.output_fields]
        what = "; ".join(part for part in (f"adds {', '.join(added)}" if added else "",
                                           f"drops {', '.join(gone)}" if gone else "") if part) or "reorders them"
        raise ConfigError(f"the stages changed the columns of this job's output {paths.output} ({what}); a job's "
                          "columns cannot change: use a new --output for these stages, or --fresh to start this "
                          "one over")
    if cp.config_fingerprint != plan.fingerprint:
        what = describe_change(cp.config, _config(plan)) or "the stages, prompts, models or --id-columns changed"
        if not options.allow_config_change:
            raise ConfigError(f"the configuration changed since this job started ({paths.checkpoint}): {what}; "
                              "rerun with --allow-config-change to continue anyway, or use a new --output")
        log.warning("the configuration changed since this job started (%s); continuing (--allow-config-change)",
                    what)
        cp.config_fingerprint = plan.fingerprint
        cp.config = _config(plan)
        cp.stages = [s.name for s in plan.stages.stages]
        cp.fields = plan.stages.output_fields
    elif not cp.config:
        cp.config = _config(plan)  # a job started before checkpoints kept it: from now on a change is named
    changed = (cp.input.get("size"), cp.input.get("mtime")) != (input_info["size"], input_info["mtime"])
    if changed:
        log.warning("the input changed since the checkpoint (size/mtime); IDs are content hashes, so new rows "
                    "will be processed and vanished rows ignored")
        cp.input = input_info
        cp.counts_exact = False
        cp.unreadable_logged = 0  # rows are numbered anew in a changed input
    return changed


def _fresh(plan: Plan, confirm: Callable[[str], bool]) -> None:
    paths = plan.paths
    if plan.options.checkpoint and paths.checkpoint.exists():
        try:
            read_checkpoint(paths.checkpoint)
        except ConfigError:  # a file of the user's named by mistake; the default name is enrichkit's own
            raise UsageError(f"--checkpoint {paths.checkpoint} is not an enrichkit checkpoint, and --fresh deletes "
                             "only a job's own files: nothing was deleted; give another --checkpoint") from None
    question = f"Delete {paths.output} ({_paid(plan)}) and {paths.checkpoint}, and start over?"
    if not plan.options.yes and not confirm(question):
        raise UsageError(f"--fresh deletes {paths.output} and its {_paid(plan)}; not confirmed, nothing was "
                         "deleted (add --yes when not on a terminal)")
    cache = paths.cache
    for path in (paths.checkpoint, paths.output, paths.report, paths.errors, cache, Path(f"{cache}-wal"),
                 Path(f"{cache}-shm")):
        path.unlink(missing_ok=True)


def _paid(plan: Plan) -> str:
    """'N paid rows', counted from the checkpoint, else from the output's lines."""
    paths = plan.paths
    try:
        n = read_checkpoint(paths.checkpoint).completed_count if paths.checkpoint.exists() else None
    except ConfigError:
        n = None
    if n is None:
        try:
            with open(paths.output, "rb") as f:
                n = max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1)
        except OSError:
            n = 0
    return f"{n} paid row{'s' if n != 1 else ''}"


def _foreign_output(path: Path) -> bool:
    """Whether `path` starts with a whole header row that lacks `_record_id`: a file of the user's, which a job must
    neither append to nor delete (`--fresh`). A header torn by a crash is left to the read-back."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20).decode("utf-8", "replace").lstrip("\ufeff")
    except OSError:
        return False
    if "\n" not in head:
        return False
    try:
        header = next(csv.reader(io.StringIO(head, newline="")))
    except (StopIteration, csv.Error):
        return False
    return ID_COLUMN not in header


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
