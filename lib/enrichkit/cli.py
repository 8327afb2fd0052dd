"""`enrich.py`'s command line: flags in, a `enrichkit.Job` run, its exit code out. Here: the argument parser,
the signal handlers, the `--fresh` question on a terminal, the test knobs read from the environment, and the
.env files' variables exported into the process (the library only reads them). The rest
of the process edge (errors to one line and an exit code, closed streams, the exit itself) is `enrichkit.edge`'s,
shared with `jobs.py`; everything else (the key and its redaction, recorded options, closing, notifying) is the
library's.

    main -> flags -> Job(...) -> with signals: job.run() -> RunResult.exit_code
    entry -> main -> exit_process (no thread left running holds the exit)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from enrichkit import __version__, commands
from enrichkit.config.plan import RunOptions
from enrichkit.edge import error_edge, run_console, settle_streams
from enrichkit.errors import EXIT_USAGE
from enrichkit.logs import say, setup_logging
from enrichkit.redact import redact

if TYPE_CHECKING:
    from enrichkit.api import Job
    from enrichkit.config.envfiles import Environment

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

    bat = p.add_argument_group("batch mode (the Gemini Batch API: half the token price, results within 24 h)")
    bat.add_argument("--batch", action="store_true", default=None,
                     help="send LLM stages through the Gemini Batch API (python/http stages run locally)")
    bat.add_argument("--batch-detach", action="store_true", default=None,
                     help="with --batch: submit and collect what is ready, then exit 5 while Google jobs run "
                          "(for cron: make enrich ARGS=\"--batch --batch-detach\")")
    bat.add_argument("--batch-poll", type=_number(positive=True), metavar="SECONDS",
                     help="how often a waiting batch run asks Google about its jobs (default: 60)")
    bat.add_argument("--cancel-batches", action="store_true", default=None,
                     help="cancel this job's batch jobs at Google; their records become pending again")

    out = p.add_argument_group("terminal")
    out.add_argument("-q", "--quiet", action="store_true", default=None, help="only errors and the final line")
    out.add_argument("-v", "--verbose", action="count", help="enrichkit's debug lines (-vv: the HTTP libraries' too)")
    out.add_argument("--version", action="version", version=f"enrichkit {__version__}")
    return p


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as `RunOptions` names (those not given take the job's recorded value, else the default)."""
    return {f.name: getattr(args, f.name) for f in fields(RunOptions) if getattr(args, f.name, None) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (never raises for a user error)."""
    settle_streams()
    args = build_parser().parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose or 0)
    logging.raiseExceptions = False  # a stderr closed early (`2>&1 | head`) must not change the outcome
    return error_edge("enrich", lambda: _run(options_from(args)))


def entry() -> NoReturn:
    """The `enrichkit` console script, `scripts/enrich.py` and `python -m enrichkit`."""
    run_console(main)


def _run(given: dict[str, Any]) -> int:
    from enrichkit.api import Job
    from enrichkit.run.job import Settings

    given.pop("verbose", None)
    settings = Settings(backoff_base=_env_float("ENRICHKIT_BACKOFF_BASE", 1.0),
                        quota_window=_env_float("ENRICHKIT_QUOTA_WINDOW", 60.0) or None,
                        batch_chunk=int(_env_float("ENRICHKIT_BATCH_CHUNK", 5000)),
                        batch_settle=_env_float("ENRICHKIT_BATCH_SETTLE", 60.0),
                        batch_crash_at=_crash_hook(os.environ.get("ENRICHKIT_BATCH_CRASH_AT", "")))
    hooks = _ProcessHooks()
    job = Job(given.pop("input"), given.pop("output"), stages=given.pop("stages_file", None),
              select_stages=given.pop("stages", None), progress=True, confirm=hooks.confirm,
              drain_seconds=_env_float("ENRICHKIT_DRAIN_SECONDS", 10.0), _settings=settings,
              _on_environment=_export_env_files, **given)
    hooks.job = job
    with hooks.signals():
        result = job.run()
    if result.error is not None:
        say(f"enrich: error: {redact(str(result.error))}")
    return result.exit_code


def _export_env_files(env: Environment) -> None:
    """The process's environment gets the .env files' variables it lacks, as `enrich.py` always loaded them (a
    python stage reading `os.environ` sees them). The library only reads them."""
    for name, value in env.exported().items():
        os.environ.setdefault(name, value)


def _crash_hook(points: str) -> Callable[[str], None] | None:
    """ENRICHKIT_BATCH_CRASH_AT=point[,point]: the process dies (as kill -9 would) when a batch run reaches one
    of them (the crash tests; see enrichkit.batch.run for the points)."""
    wanted = {p.strip() for p in points.split(",") if p.strip()}
    if not wanted:
        return None

    def crash(point: str) -> None:
        if point in wanted:
            os._exit(137)

    return crash


class _ProcessHooks:
    """The process's part of a run: signals and the --fresh question on a terminal.

    From the moment the job exists, SIGINT, SIGTERM and SIGHUP (a closed terminal or SSH session) are handled:
    while the job is being opened (the lock, the SDK's import, the models' check) one stops it at once (exit
    130, nothing written); from the run on it only sets a flag: the records in flight drain, the report and
    checkpoint are written (exit 130); a second abandons them. A signal after the run cannot change its code.
    """

    def __init__(self) -> None:
        self.job: Job | None = None
        self._asking = False

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        job = self.job
        if self._asking or job is None or job.opening:
            raise KeyboardInterrupt
        job.stop(signal.Signals(signum).name)

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        names = ("SIGINT", "SIGTERM", "SIGHUP")
        wanted = [getattr(signal, n) for n in names if hasattr(signal, n)]
        # A signal the parent set to be ignored stays ignored: `nohup` (SIGHUP), a shell's background job (SIGINT).
        wanted = [s for s in wanted if signal.getsignal(s) is not signal.SIG_IGN]
        previous = {s: signal.signal(s, self._handler) for s in wanted}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def confirm(self, question: str) -> bool:
        """--fresh on a terminal: ask (Ctrl+C stops). Not on a terminal: no (the store then says to add --yes)."""
        try:
            if sys.stdin is None or not sys.stdin.isatty():  # None: stdin closed (`0<&-`), as under some daemons
                return False
        except (ValueError, OSError):  # a closed stream
            return False
        self._asking = True
        try:
            answer = input(f"{question} [y/N] ")
        except EOFError:  # Ctrl+D: no
            return False
        finally:
            self._asking = False
        return answer.strip().lower() in ("y", "yes")


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default
