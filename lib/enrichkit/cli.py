"""`scripts/enrich.py`: the thin edge. Parses flags, reads the environment, owns the process (signals,
the `--fresh` prompt, `os._exit`), and turns errors into one line and an exit code, for both CLIs.

    main -> options (+ the job's recorded ones on --resume) -> plan -> open job (lock, store)
         -> with signals: Pipeline.run() -> notify -> exit code
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from enrichkit import __version__, commands
from enrichkit.edge import error_edge, flush_quietly, reopen_closed_streams
from enrichkit.errors import EXIT_USAGE, AuthError, UsageError
from enrichkit.logs import log, say, setup_logging
from enrichkit.plan import RunOptions, check_options, job_paths
from enrichkit.redact import register_secret

if TYPE_CHECKING:
    from enrichkit.jobfiles import JobPaths
    from enrichkit.stopping import StopSignal

EXAMPLES = """\
examples:
  # enrich a CSV through every stage of data/stages.toml, 10 workers
  python scripts/enrich.py --input data/sample.csv --output out/enriched.csv

  # after Ctrl+C, kill -9 or a reboot: continue where it stopped, with the job's recorded options
  # (also a fine cron line)
  python scripts/enrich.py --input data/sample.csv --output out/enriched.csv --resume

  # try again only the records that failed
  python scripts/enrich.py --input data/sample.csv --output out/enriched.csv --retry-failed

  # two stages, 20 workers, IDs from two columns, against the bundled stand-in
  python scripts/enrich.py --input data/sample.csv --output out/poc.csv --stages poc,domain \\
      --max-workers 20 --id-columns fund.title,poc.last_name --base-url http://127.0.0.1:8766

  # a semicolon-separated export from European Excel, in Windows-1252
  python scripts/enrich.py --input leads.csv --output out/leads.csv --delimiter ';' --encoding cp1252

exit codes: 0 all enriched (or nothing left), 1 some records failed or the provider/disk stopped the run,
            2 usage/config/input/auth error, 3 another run holds this output, 4 --max-cost reached,
            130 interrupted (1, 4 and 130 are resumable)
"""


def _csv_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _number(*, positive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
        if value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError("must be > 0" if positive else "must be >= 0")
        return value
    return parse


def _delimiter(text: str) -> str:
    value = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(text.lower(), text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"one character (or tab), not {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line and exit 2, like every other usage error.
        say(f"{self.prog.split('.')[0].split()[0]}: error: {message} (see --help)")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """Every option defaults to None here, so a run knows which flags were given (they override the job's
    recorded options on --resume); `RunOptions` holds the real defaults."""
    p = _Parser(
        prog=commands.prog(commands.ENRICH),
        description="Enrich every record of a CSV/JSONL/XLSX file through Gemini prompts, HTTP calls or "
                    "Python functions. Resumable after Ctrl+C, kill -9 or a reboot; every input record "
                    "ends up in the output exactly once.",
        epilog=commands.with_shown_names(EXAMPLES), formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=None)
    io = p.add_argument_group("input and output")
    io.add_argument("--input", required=True, metavar="PATH", help="CSV, JSONL or XLSX (by extension), streamed")
    io.add_argument("--output", required=True, metavar="PATH", help="output CSV, appended as records finish")
    io.add_argument("--stages-file", metavar="PATH", help="stage definitions (TOML) (default: data/stages.toml)")
    io.add_argument("--stages", type=_csv_list, metavar="a,b", help="which stages to run, in file order (default: all)")
    io.add_argument("--id-columns", type=_csv_list, metavar="a,b",
                    help="columns hashed into the record ID (default: all input columns)")
    io.add_argument("--encoding", metavar="NAME",
                    help="input encoding, e.g. cp1252 (default: sniffed from a BOM, else utf-8)")
    io.add_argument("--delimiter", type=_delimiter, metavar="C",
                    help="CSV delimiter: , ; tab | (default: sniffed from the header)")
    io.add_argument("--excel", action="store_true", default=None,
                    help="start a new output CSV with a UTF-8 BOM, so Excel shows accents right (recorded with the "
                         "job); for a workbook: jobs.py export CHECKPOINT --format xlsx")
    io.add_argument("--checkpoint", metavar="PATH", help="progress file (default: <output stem>.progress.json)")
    io.add_argument("--report", metavar="PATH", help="final report (default: <output stem>.report.json)")
    io.add_argument("--errors", metavar="PATH", help="error log (default: <output stem>.errors.jsonl)")

    job = p.add_argument_group("job control")
    job.add_argument("--resume", action="store_true", default=None,
                     help="continue the job in the checkpoint with its recorded options (flags given again "
                          "override them); with no checkpoint, start a new job (one cron line)")
    job.add_argument("--retry-failed", action="store_true", default=None,
                     help="run only the records the checkpoint lists as failed")
    job.add_argument("--fresh", action="store_true", default=None,
                     help="delete the existing output (its paid rows) and checkpoint and start over (asks on a "
                          "terminal)")
    job.add_argument("--yes", action="store_true", default=None, help="confirm --fresh without asking")
    job.add_argument("--allow-config-change", action="store_true", default=None,
                     help="resume even though the stages, prompts, models or --id-columns changed")
    job.add_argument("--limit", type=int, metavar="N", help="process at most N pending records in this run")
    job.add_argument("--dry-run", action="store_true", default=None,
                     help="validate, render the first prompt, estimate tokens, cost and time; call and write nothing")
    job.add_argument("--checkpoint-interval", type=int, metavar="N",
                     help="completed records between checkpoint writes (default: 10)")
    job.add_argument("--max-cost", type=_number(positive=True), metavar="USD",
                     help="stop gracefully before spending more, grounding fees included (exit 4, resumable)")
    job.add_argument("--notify-url", metavar="URL",
                     help="POST a JSON summary here when the run ends (Slack/Discord webhooks work as is)")

    api = p.add_argument_group("calls")
    api.add_argument("--max-workers", type=int, metavar="N", help="concurrent workers, 1..20 (default: 10)")
    api.add_argument("--rpm", type=_number(positive=True), metavar="N",
                     help="requests per minute, per model (overrides the stages file)")
    api.add_argument("--tpm", type=_number(positive=True), metavar="N",
                     help="input tokens per minute, per model (overrides the stages file)")
    api.add_argument("--max-retries", type=int, metavar="N",
                     help="attempts after the first, per call, for transient errors (default: 3)")
    api.add_argument("--timeout", type=_number(positive=True), metavar="SECONDS",
                     help="per request (default: 60; a flex stage waits at least 900)")
    api.add_argument("--max-outage", type=_number(positive=True), metavar="SECONDS",
                     help="stop (resumable) when the API has been down this long (default: 600)")
    api.add_argument("--delay", type=_number(positive=False), metavar="SECONDS",
                     help="pause between a record's stages (default: 0)")
    api.add_argument("--base-url", metavar="URL", help="Gemini endpoint (also env GEMINI_BASE_URL; default: Google's)")
    api.add_argument("--model", metavar="NAME", help="default model for LLM stages (default: the stages file's)")
    api.add_argument("--no-cache", action="store_true", default=None,
                     help="do not read or write the response cache")

    out = p.add_argument_group("terminal")
    out.add_argument("-q", "--quiet", action="store_true", default=None, help="only errors and the final line")
    out.add_argument("-v", "--verbose", action="count", help="enrichkit's debug lines (-vv: the HTTP libraries' too)")
    out.add_argument("--version", action="version", version=f"enrichkit {__version__}")
    return p


def options_from(args: argparse.Namespace) -> RunOptions:
    """`RunOptions` from parsed flags: the defaults where a flag was not given, and which were."""
    values = {f.name: getattr(args, f.name) for f in fields(RunOptions) if getattr(args, f.name, None) is not None}
    return RunOptions(**values, given=frozenset(values))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (never raises for a user error)."""
    reopen_closed_streams()
    args = build_parser().parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose or 0)
    logging.raiseExceptions = False  # a stderr closed early (`2>&1 | head`) must not change the outcome
    with _startup_signals():
        return error_edge("enrich", lambda: _run(options_from(args)))


def _run(options: RunOptions) -> int:
    from enrichkit.checkpoint import read_checkpoint
    from enrichkit.envfiles import load_env_files, with_environment

    check_options(options)
    paths = job_paths(options)
    recorded = (read_checkpoint(paths.checkpoint).options
                if (options.resume or options.retry_failed or options.dry_run) and paths.checkpoint.is_file() else None)
    stages_file = recorded.get("stages_file") if recorded and "stages_file" not in options.given else None
    searched = load_env_files(stages_file or options.stages_file)  # .env files: see enrichkit.envfiles
    options = with_environment(options)  # GEMINI_BASE_URL is recorded like --base-url
    if recorded is not None:
        options = options.with_recorded(recorded)
    if options.dry_run:
        from enrichkit.dryrun import dry_run

        return dry_run(options)
    from enrichkit.job import Settings, open_job
    from enrichkit.pipeline import Pipeline
    from enrichkit.plan import plan_job
    from enrichkit.progress import Progress
    from enrichkit.stopping import StopSignal

    _register_keys(options.stages_file)
    plan = plan_job(options, check_prices=False)  # prices are checked once the models are known to exist
    settings = Settings(api_key=api_key(searched) if plan.llm else None,
                        base_url=options.base_url or os.environ.get("GEMINI_BASE_URL") or None,
                        backoff_base=_env_float("ENRICHKIT_BACKOFF_BASE", 1.0),
                        quota_window=_env_float("ENRICHKIT_QUOTA_WINDOW", 60.0) or None)
    stop = StopSignal(drain_seconds=_env_float("ENRICHKIT_DRAIN_SECONDS", 10.0))
    job = open_job(plan, settings, stop=stop, confirm_fresh=_confirm)
    abandoned = 0
    # From the run to the last close a signal only sets a flag: a Ctrl+C just after the run finished must not turn
    # a completed job into "interrupted", exit 130 (`_notify` takes the signals over while it waits).
    with _signals(stop):
        try:
            pipeline = Pipeline(plan, job.store, job.enricher, stop=stop, progress=Progress(quiet=options.quiet),
                                say=say, pace=job.pace)
            result = pipeline.run()
            abandoned = result.abandoned
            code = result.outcome.exit_code
        finally:
            if not abandoned:
                job.close()
    if abandoned:
        job.lock.release()
    # The webhook goes out once the job's files are closed and its lock released: a slow receiver never
    # blocks the next run (a cron tick's --resume).
    _notify(options.notify_url or plan.stages.defaults.get("notify_url"), result.report, plan.paths)
    if abandoned:
        # Records abandoned at the drain deadline are still on the wire; everything durable is written.
        # Leave without joining their threads (they would hold the exit for up to --timeout).
        flush_quietly()
        os._exit(code)
    return code


def _notify(url: str | None, report: dict[str, Any], paths: JobPaths) -> None:
    """--notify-url (or the stages file's notify_url): one POST with the run's summary. It never changes the
    exit code; a Ctrl+C while it waits abandons it at once."""
    if not url:
        return
    from enrichkit.notify import notify_run_end
    from enrichkit.stopping import StopSignal

    waiting = StopSignal(drain_seconds=0)
    with _signals(waiting):
        warning = notify_run_end(url, report, paths, should_stop=waiting)
    if warning:
        log.warning("%s", warning)


def _stop_signals() -> list[signal.Signals]:
    """SIGINT, SIGTERM and SIGHUP (the terminal closed); a SIGHUP that is ignored (`nohup`) stays ignored: the
    run is meant to outlive its terminal."""
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    handled = [signal.SIGINT, signal.SIGTERM]
    if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
        handled.append(hangup)
    return handled


@contextlib.contextmanager
def _startup_signals() -> Iterator[None]:
    """Until the run's own handlers take over (`_signals`), SIGTERM and SIGHUP stop the start-up as Ctrl+C does
    (one line, exit 130, nothing half-done) instead of killing it (143) while, say, the models are checked."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in _stop_signals() if s != signal.SIGINT}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def _signals(stop: StopSignal) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP only set flags on `stop` (its `interrupt`); every write stays whole."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.interrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in _stop_signals()}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def api_key(searched: list[Path] | None = None) -> str:
    """The Gemini key from GEMINI_API_KEY or GOOGLE_API_KEY (environment, or the .env files `searched`: see
    enrichkit.envfiles). A key pasted with typographic quotes, spaces or other non-ASCII characters is refused
    here (exit 2)."""
    from enrichkit.envfiles import load_env_files, missing_key_message

    searched = load_env_files(None) if searched is None else searched
    name = "GEMINI_API_KEY" if os.environ.get("GEMINI_API_KEY") else "GOOGLE_API_KEY"
    key = os.environ.get(name) or ""
    if not key:
        raise AuthError(missing_key_message(searched))
    bad = [c for c in key if not (c.isascii() and c.isprintable()) or c.isspace() or c in "\"'"]
    if bad:
        kinds = sorted({"spaces" if c.isspace() else "quotes" if c in "\"'“”‘’" else "non-ASCII characters"
                        for c in bad})
        raise UsageError(f"{name} contains {' and '.join(kinds)} (pasted from a document?); an API key is plain "
                         "letters, digits, - and _: fix it in the environment or .env")
    return key


def _register_keys(stages_file: str | None = None) -> None:
    """Whatever the stages, a key in the environment or a .env file is a secret: a python stage's error text, an
    http stage's answer may carry it, and it must reach no file and no line."""
    from enrichkit.envfiles import env_values

    files = env_values(stages_file)
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        for value in (os.environ.get(name), *(values.get(name) for values in files)):
            if value:
                register_secret(value)
                register_secret(value.strip().strip("\"'“”‘’"))


def _confirm(question: str) -> bool:
    """--fresh on a terminal: ask. Not on a terminal: no (the store then says to add --yes)."""
    try:
        if sys.stdin is None or not sys.stdin.isatty():  # None: stdin closed (`0<&-`), as under some daemons
            return False
    except (ValueError, OSError):  # a closed stream
        return False
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:  # Ctrl+D: no
        return False
    return answer.strip().lower() in ("y", "yes")


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default
