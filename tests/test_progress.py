"""Progress: a tqdm bar on a terminal; off a terminal a log line every 30 s or 5 %; figures and ETA."""

from __future__ import annotations

import logging
import os
import pty
import select
import subprocess

import pytest

from conftest import Workspace, make_rows, write_csv
from enrichkit.run.progress import Figures, Progress, describe, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fig(done: int, total: int = 1000) -> Figures:
    return Figures(done=done, total=total, failed=1, tokens=12345, cost=0.5, rate_per_min=60.0)


def test_off_a_terminal_a_line_every_5_percent_or_30_seconds(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = Progress(quiet=False, tty=False, clock=clock)
    progress.start(1000, 0)
    with caplog.at_level(logging.INFO, logger="enrichkit"):
        for done in range(0, 200, 10):  # 20 updates, 0..190 done: lines at 50, 100, 150 (every 5 % = 50)
            progress.update(_fig(done))
        lines_by_fraction = len(caplog.records)
        clock.now = 31.0
        progress.update(_fig(191))  # 1 more record, but 30 s passed
    assert lines_by_fraction == 3
    assert len(caplog.records) == 4
    assert "191/1000 (19.1%) done, 1 failed, 12,345 tokens, $0.5000, 60.0 rec/min" in caplog.records[-1].getMessage()


def test_quiet_draws_nothing(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(quiet=True, tty=False, clock=Clock())
    progress.start(10, 0)
    with caplog.at_level(logging.INFO, logger="enrichkit"):
        progress.update(_fig(10, 10), force=True)
    assert caplog.records == []


def test_eta_and_durations() -> None:
    assert _fig(400).eta_seconds == 600.0  # 600 left at 60/min
    assert Figures(1, 2, 0, 0, 0.0, 0.0).eta_seconds is None
    assert format_duration(3725) == "1h02m" and format_duration(75) == "1m15s" and format_duration(None) == "?"
    assert "ETA 10m00s" in describe(_fig(400))


def test_on_a_terminal_the_cli_draws_a_tqdm_bar(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(30))
    master, slave = pty.openpty()
    proc = subprocess.Popen(ws.args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                            env=ws.env(), cwd=ws.tmp)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    assert "failed=0" in screen and "rec/min" in screen and "rate-limited=0" in screen, screen  # the postfix
    assert "100%" in screen and "30/30" in screen, screen  # the final draw: a bar that ends full, not at 99 %
    assert " 429/min" not in screen
    assert "progress:" not in screen  # no log lines on a terminal: the bar replaces them
    assert "Done: all 30 records enriched." in screen
