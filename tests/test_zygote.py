"""The tests' zygote (tests/zygote.py): a process forked from it is the real process the tests mean."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import zygote
from conftest import JOBS, Workspace, exactly_once, make_rows, rows_written, wait_for, write_csv


def _same(text: str) -> list[str]:
    """Lines without what differs from run to run: numbers and hex (job ids, times, rates), progress lines."""
    return [re.sub(r"[0-9a-f]*[0-9][0-9a-f]*", "N", line) for line in text.splitlines() if " progress: " not in line]


def test_a_zygote_child_runs_as_a_real_process_does_and_dies_by_kill_9_as_one(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    write_csv(ws.input, make_rows(10))
    runs = {}
    for how in ("real", "zygote"):
        monkeypatch.setenv(zygote.OFF, "1" if how == "real" else "0")
        with zygote.popen(ws.args("--max-workers", "1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=ws.env(), cwd=ws.tmp, stdin=subprocess.DEVNULL) as proc:
            assert isinstance(proc, zygote.ZygoteProcess) == (how == "zygote")
            out, err = proc.communicate(timeout=90)
        runs[how] = (proc.returncode, _same(out), _same(err), _same(ws.output.read_text(encoding="utf-8")))
        shutil.rmtree(ws.output.parent)
    assert runs["real"][0] == 0, runs["real"]
    assert runs["zygote"] == runs["real"]

    # kill -9 of a zygote child: -9 as subprocess says it, and a job --resume completes exactly once
    monkeypatch.setenv(zygote.OFF, "0")
    write_csv(ws.input, make_rows(120))
    ws.fake.configure(latency=0.05)
    proc = ws.start("--max-workers", "2")
    assert isinstance(proc, zygote.ZygoteProcess)
    wait_for(lambda: rows_written(ws) >= 3, what="first rows")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -9
    proc.communicate(timeout=30)
    assert rows_written(ws) < 120
    ws.fake.configure(latency=0)
    done = ws.run_process("--resume")
    assert done.returncode == 0, done.stderr
    exactly_once(ws)


def test_a_dead_zygote_gives_way_to_real_processes_with_one_warning(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = object.__new__(zygote._Zygote)  # the worker's zygote, as found after it died
    gone.proc, gone.env = dead, dict(os.environ)
    monkeypatch.setattr(zygote, "_zygote", gone)
    monkeypatch.setattr(zygote, "_failed", False)
    monkeypatch.delenv(zygote.OFF, raising=False)  # the zygote's path, even in a run with the switch on
    with (tmp_path / "zygote.log").open("wb") as gone.log:
        with pytest.warns(RuntimeWarning, match="real processes from now on: the zygote died"):
            first = zygote.run([sys.executable, str(JOBS), "--help"], capture_output=True, text=True, timeout=60)
        assert first.returncode == 0 and "usage:" in first.stdout, first.stderr
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            with zygote.popen([sys.executable, str(JOBS), "--help"], stdout=subprocess.PIPE, text=True) as second:
                assert isinstance(second, subprocess.Popen)
                assert "usage:" in second.communicate(timeout=60)[0]
