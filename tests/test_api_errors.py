"""Where the CLI exits 2, the library raises an `EnrichError` with that exit code, not the bare `OSError` it met
(docs/python-api.md): here an output whose folder cannot be made because a file holds its name."""

from __future__ import annotations

from pathlib import Path

import pytest

import enrichkit
from enrichkit.cli import main

STAGES = [{"name": "domain", "type": "python", "function": "enrichkit.builtin:email_domain",
           "fields": {"email_domain": "string"}}]


@pytest.fixture
def blocked(tmp_path: Path) -> tuple[Path, Path]:
    """(input, an output whose folder is a regular file)."""
    source = tmp_path / "in.csv"
    source.write_text("id,poc.email\n1,a@example.com\n", encoding="utf-8")
    (tmp_path / "taken").write_text("a file, not a folder\n", encoding="utf-8")
    return source, tmp_path / "taken" / "out.csv"


def test_an_output_folder_that_cannot_be_made_raises_an_enrich_error_with_the_clis_code(
        blocked: tuple[Path, Path]) -> None:
    source, output = blocked
    with pytest.raises(enrichkit.EnrichError) as raised:
        enrichkit.enrich(source, output, stages=STAGES)
    assert raised.value.exit_code == 2
    assert str(output.parent) in str(raised.value)
    assert not output.parent.is_dir()


def test_the_cli_says_the_same_in_one_line_and_exits_2(blocked: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    source, output = blocked
    stages = tmp_path / "stages.toml"
    stages.write_text('[[stages]]\nname = "domain"\ntype = "python"\nfunction = "enrichkit.builtin:email_domain"\n'
                      '[stages.fields]\nemail_domain = "string"\n', encoding="utf-8")
    code = main(["--input", str(source), "--output", str(output), "--stages-file", str(stages), "-q"])
    said = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert said == [f"enrich: error: {output.parent}: File exists"]
