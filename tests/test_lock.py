"""One run per output: a second run exits 3 naming the holder; a lock left by kill -9 blocks nothing."""

from __future__ import annotations

import signal

from conftest import Workspace, make_rows, read_json, rows_written, wait_for, write_csv


def test_lock_left_by_kill_9_does_not_block_the_next_run(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(40))
    ws.fake.configure(latency=0.05)
    first = ws.start("--max-workers", "2")
    wait_for(lambda: rows_written(ws) >= 3, what="rows")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    assert ws.output.with_name("enriched.lock").exists()  # the file stays; the kernel lock is gone
    ws.fake.configure(latency=0)
    proc = ws.run("--resume")
    assert proc.returncode == 0, proc.stderr
    assert len(ws.output_ids()) == len(set(ws.output_ids())) == 40


def test_a_second_run_exits_3_naming_the_holder_and_deleting_the_lock_file_lets_it_write_nothing(ws: Workspace
                                                                                                  ) -> None:
    write_csv(ws.input, make_rows(60))
    ws.fake.configure(latency=0.5)  # the first run still works (15 s for its 60 rows) while the others start
    first = ws.start("--max-workers", "2", "--resume")
    try:
        wait_for(lambda: rows_written(ws) >= 1, what="the first run to start writing")
        second = ws.run("--resume")
        assert second.returncode == 3, second.stderr
        assert f"PID {first.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert "Traceback" not in second.stderr
        ws.output.with_name("enriched.lock").unlink()  # a cleanup script, a user tidying the folder
        ws.output.with_name("enriched.lock.owner").unlink(missing_ok=True)
        third = ws.run_process("--resume")  # the next cron tick
        assert third.returncode == 3, third.stderr
        assert "another run" in third.stderr
    finally:
        ws.fake.configure(latency=0)
        first.communicate(timeout=60)
    assert first.returncode == 0
    assert read_json(ws.checkpoint)["status"] == "completed"
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) == 60  # nothing written twice
