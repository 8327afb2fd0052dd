"""What a new user met after the package split (issue 16), each pinned by the run that showed it: the Python API
and the CLI in-process, on the fake provider or python stages (no process, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

import enrichkit
from conftest import make_rows, write_csv


def _domain(record: dict[str, str]) -> dict[str, str]:
    return {"email_domain": record["poc.email"].rpartition("@")[2]}


STAGES = [{"name": "domain", "type": "python", "function": _domain, "fields": {"email_domain": "string"}}]


def test_a_job_whose_stages_were_given_in_python_says_to_give_them_again_on_resume(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch
                                                                                    ) -> None:
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "in.csv", make_rows(6))
    first = enrichkit.enrich("in.csv", "out/x.csv", stages=STAGES, limit=2)
    assert first.exit_code == 1 and first.counts["completed"] == 2
    with pytest.raises(enrichkit.ConfigError) as raised:
        enrichkit.enrich("in.csv", "out/x.csv", resume=True)  # the stages are not recorded as a file
    message = str(raised.value)
    assert "given in Python" in message and "stages=" in message, message
    assert "Is a directory" not in message
    again = enrichkit.enrich("in.csv", "out/x.csv", stages=STAGES, resume=True)
    assert again.exit_code == 0 and again.counts["completed"] == 6
