"""SIGINT / SIGTERM: finish in-flight records, checkpoint `interrupted`, exit 130, --resume completes. (SIGHUP, handled
the same, is in test_process_edge.py.)"""

from __future__ import annotations

import signal
import subprocess

import pytest

import zygote
from conftest import Workspace, expected_ids, make_rows, read_csv, read_json, rows_written, wait_for, write_csv

# The interrupted runs' input: at 0.15 s an answer and 4 workers (27 rows a second), the signal lands some 10 rows
# in with 2.5 s of rows to spare; the resume (in-process, the stand-in then answering at once) does the rest.
ROWS = 80
LATENCY = 0.15


def test_sigint_mid_run_exits_130_then_resume_completes_exactly_once(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(ROWS))
    ws.fake.configure(latency=LATENCY)
    proc = ws.start("--max-workers", "4")
    wait_for(lambda: rows_written(ws) >= 10, what="first rows")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "interrupted"
    done = len(read_csv(ws.output))
    assert 10 <= done < ROWS
    assert f"Interrupted: {done} done, {ROWS - done} left. Run with --resume to continue." in err
    assert cp["completed_count"] == done  # in-flight records finished and were checkpointed
    ws.fake.configure(latency=0)
    resumed = ws.run("--resume")
    assert resumed.returncode == 0, resumed.stderr
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) == ROWS and set(ids) == expected_ids(ws)


def test_sigterm_is_handled_like_sigint(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(ROWS))
    ws.fake.configure(latency=LATENCY)
    proc = ws.start("--max-workers", "4")
    wait_for(lambda: rows_written(ws) >= 5, what="first rows")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert read_json(ws.checkpoint)["status"] == "interrupted"


def test_sigterm_while_the_models_are_checked_at_start_exits_130_with_nothing_written(ws: Workspace) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as api:  # accepts the model check's connection, never answers
        api.settimeout(60)
        env = ws.env(GEMINI_BASE_URL=f"http://127.0.0.1:{api.getsockname()[1]}")
        proc = zygote.popen(ws.args(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ws.tmp, stdin=subprocess.DEVNULL)
        connection, _ = api.accept()  # the run is checking its model: before any record, before any handler
        with connection:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err  # not death by signal (-15): the handlers are in place before anything slow
    assert "Traceback" not in err and "enrich: interrupted" in err
    assert not ws.checkpoint.exists() and not ws.output.exists()


def test_second_ctrl_c_abandons_in_flight_records(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(50))
    ws.fake.configure(latency=0.02)
    err_path = ws.tmp / "stderr.txt"
    with open(err_path, "w") as err_file:
        # A drain long enough that only the second Ctrl+C can end the run before communicate() gives up.
        proc = zygote.popen(ws.args("--max-workers", "4", "--timeout", "300"), stdout=subprocess.DEVNULL,
                            stderr=err_file, env=ws.env(ENRICHKIT_DRAIN_SECONDS="600"), cwd=ws.tmp)
        wait_for(lambda: rows_written(ws) >= 5, what="first rows")
        ws.fake.configure(latency=600)  # every request now hangs
        wait_for(lambda: ws.fake.stats()["in_flight"] >= 1, what="a request to hang")  # so there is a drain
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: "finishing in-flight" in err_path.read_text(), what="the first Ctrl+C to be seen")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    err = err_path.read_text()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert read_json(ws.checkpoint)["status"] == "interrupted"
    ws.fake.configure(latency=0)
    assert ws.run("--resume").returncode == 0
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) == 50


def test_a_ctrl_c_just_after_the_run_finished_keeps_its_exit_code(ws: Workspace, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """The run is over and written; a Ctrl+C while the job's files close must not make it "interrupted", 130."""
    from enrichkit.run.job import Job

    close = Job.close

    def close_with_a_ctrl_c(job: Job) -> None:
        signal.raise_signal(signal.SIGINT)
        close(job)

    monkeypatch.setattr(Job, "close", close_with_a_ctrl_c)
    write_csv(ws.input, make_rows(20))
    done = ws.run()
    assert done.returncode == 0, done.stderr
    assert read_json(ws.checkpoint)["status"] == "completed" and len(read_csv(ws.output)) == 20
