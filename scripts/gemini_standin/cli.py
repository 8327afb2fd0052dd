"""Command line of the stand-in: flags to a FakeConfig, then serve until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from .config import CHOICES, FakeConfig, coerce
from .faults import FAULTS
from .server import FakeGemini

DESCRIPTION = "Local stand-in for the Gemini REST API (models, generateContent, countTokens), with fault injection."


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> FakeConfig:
    parser = argparse.ArgumentParser(description=DESCRIPTION, epilog="faults: " + ", ".join(FAULTS))
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=0, help="0 picks a free port")
    add("--port-file", help="also write the port number here (atomically)")
    add("--latency", type=float, default=0.0, help="seconds added to each generateContent")
    add("--jitter", type=float, default=0.0, help="uniform +/- seconds added to the latency")
    add("--seed", type=int, default=0, help="seed for answers and random faults")
    add("--rpm", type=int, help="requests per quota window; beyond: 429 RESOURCE_EXHAUSTED with RetryInfo")
    add("--tpm", type=int, help="input tokens per quota window; beyond: 429 on the token quota")
    add("--window", type=float, default=60.0, help="length of the quota window in seconds (default 60)")
    add("--window-mode", choices=CHOICES["window_mode"], default="sliding",
        help="sliding: any WINDOW seconds; fixed: windows aligned to multiples of WINDOW since start")
    add("--rpm-delay", choices=CHOICES["rpm_delay"], default="exact",
        help="retryDelay of quota 429s: exact (whole s until a slot frees), precise (ms), google ([W/3, W])")
    add("--quota-429", choices=CHOICES["quota_429"], default="full",
        help="what quota 429s carry: full (QuotaFailure, Help, RetryInfo), retry_info (only it), bare (nothing)")
    add("--free-tier", action="store_true", help="quota ids and metrics of the free tier (...-FreeTier)")
    add("--daily-quota", type=int, help="after N answers, every request gets a per-day 429")
    add("--error-rate", type=float, default=0.0, help="fraction answered 500 INTERNAL / 503 UNAVAILABLE")
    add("--timeout-rate", type=float, default=0.0, help="fraction that hang for --hang-seconds")
    add("--hang-seconds", type=float, default=30.0)
    add("--malformed-rate", type=float, default=0.0, help="fraction answered with truncated JSON")
    add("--rate-limit-rate", type=float, default=0.0, help="fraction answered 429, retryDelay 1s")
    add("--outage", type=float, default=0.0, help="seconds of 503 UNAVAILABLE for every request ...")
    add("--outage-after", type=int, default=0, help="... once this many generateContent were received")
    add("--fail-matching", action="append", default=[], help="a prompt with TEXT gets 400 (repeatable)")
    add("--fault", action="append", type=_pair, default=[], metavar="NAME=RATE",
        help="answer this fraction of requests with fault NAME (repeatable; names below)")
    add("--fault-matching", action="append", type=_pair, default=[], metavar="NAME=TEXT",
        help="answer every prompt containing TEXT with fault NAME (repeatable)")
    add("--require-key", help="any other API key gets 400 API_KEY_INVALID")
    add("--deny-key", help="this API key gets 403 PERMISSION_DENIED")
    add("--model", dest="extra_models", action="append", default=[], metavar="NAME",
        help="accept this model name besides the built-in catalogue (repeatable)")
    add("--reroute", action="append", type=_pair, default=[], metavar="MODEL=VERSION",
        help="answer requests for MODEL with modelVersion VERSION (repeatable)")
    add("--no-thinking", dest="thinking", action="store_false", help="no thoughtsTokenCount at all")
    add("--cached-fraction", type=float, default=0.0, help="share of prompt tokens reported as cached")
    add("--null-rate", type=float, default=0.0, help="share of nullable fields answered null")
    add("--grounded-wrap", choices=CHOICES["grounded_wrap"], default="mixed",
        help="grounded answers without JSON mode: bare JSON, prose around it, a code fence, or a mix")
    add("--block-reason", choices=CHOICES["block_reason"], default="PROHIBITED_CONTENT",
        help="promptFeedback.blockReason of the 'blocked' fault")
    add("--flex-latency", type=float, default=0.0, help="seconds added to serviceTier flex requests")
    add("--flex-scale", type=float, default=1.0, help="real seconds per flex-clock second (0.002: 75 s take 0.15 s)")
    add("--catalogue", choices=CHOICES["catalogue"], default="2026-12",
        help="today's models (deprecated names routed, with modelStatus) or May 2026's")
    add("--model-status", action="append", type=_pair, default=[], metavar="MODEL=STAGE[@TIME]",
        help="answers to MODEL carry this modelStatus (e.g. gemini-3.8-flash=RETIRED) (repeatable)")
    add("--finish-reason", default="OTHER", help="finishReason of the 'finish' fault (any of the SDK's)")
    add("--new-project", action="store_true",
        help="a project new to 2.5 Flash/Pro: they list fine but answer 404 'no longer available to new users'")
    add("--date", help="the HTTP Date of every answer (ISO date or time, UTC): prices change on dates")
    add("--ignore-server-timeout", dest="honor_server_timeout", action="store_false",
        help="never answer 504 because of the X-Server-Timeout header")
    args = vars(parser.parse_args(argv))
    try:
        args["faults"] = coerce("faults", {name: value for name, value in args.pop("fault")})
        matching: dict[str, list[str]] = {}
        for name, text in args.pop("fault_matching"):
            matching.setdefault(name, []).append(text)
        args["fault_matching"] = coerce("fault_matching", matching)
    except ValueError as exc:
        parser.error(str(exc))
    args["reroute"] = dict(args.pop("reroute"))
    args["model_status"] = dict(args.pop("model_status"))
    return FakeConfig(**args)


def main(argv: list[str] | None = None) -> int:
    fake = FakeGemini(parse_args(argv))
    port = fake.start()
    print(f"fake_gemini listening on http://{fake.config.host}:{port}", flush=True)
    if fake.config.port_file:
        target = Path(fake.config.port_file)
        temp = target.with_name(f".{target.name}.tmp")
        temp.write_text(f"{port}\n")
        temp.replace(target)  # readers never see a half-written port
    done = threading.Event()
    # Both set explicitly: a shell starts background jobs with SIGINT ignored, and `kill` sends TERM.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    fake.stop()
    return 0
