"""The Python API (`enrichkit.enrich`, `enrichkit.Job`, `RunResult`, the errors, `enrichkit.testing`), used as a
notebook uses it: through the package as pip installs it (not this checkout), in a process of its own."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import ROOT
from fake_gemini import FakeGemini

DOCS = ROOT / "docs" / "python-api.md"
README = ROOT / "README.md"
KEY = "api-key-NotInAnyFile-0123456789"


def run_api(site: Path, code: str, cwd: Path, *, env: dict[str, str] | None = None, timeout: float = 90
            ) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh Python whose only enrichkit is the installed one (checked first)."""
    check = (f"import enrichkit\nassert enrichkit.__file__.startswith({str(site)!r}), enrichkit.__file__\n"
             "del enrichkit\n")
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(cwd), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", check + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=cwd, env={**base, **(env or {})}, timeout=timeout, stdin=subprocess.DEVNULL)


def funds(folder: Path, n: int = 20) -> Path:
    """The first `n` records of data/sample.csv, as funds.csv in `folder`."""
    lines = (ROOT / "data" / "sample.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    path = folder / "funds.csv"
    path.write_text("".join(lines[:n + 1]), encoding="utf-8")
    return path


def output_ids(path: Path) -> list[str]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return [row["_record_id"] for row in csv.DictReader(f)]


def test_the_installed_package_has_the_public_surface_and_its_files(api_site: Path, tmp_path: Path) -> None:
    done = run_api(api_site, """
        import json, enrichkit, enrichkit.testing
        from enrichkit.config.pricing import load_pricing
        names = sorted(enrichkit.__all__)
        assert all(hasattr(enrichkit, name) for name in names)
        assert load_pricing().known("gemini-2.5-flash")   # pricing.toml is in the package
        print(json.dumps(names))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    names = set(json.loads(done.stdout))
    assert {"enrich", "Job", "RunResult", "Event", "EnrichError", "ConfigError", "InputError", "AuthError",
            "LockedError", "UsageError"} <= names
    # the console script, from the installed folder (the run above checked its enrichkit is the installed one)
    version = subprocess.run([sys.executable, str(api_site / "bin" / "enrichkit"), "--version"], capture_output=True,
                             text=True, env={"PYTHONPATH": str(api_site), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert version.returncode == 0 and "enrichkit 0.1.0" in version.stdout


def test_the_docs_examples_run(api_site: Path, tmp_path: Path, fake: FakeGemini) -> None:
    """Every ```python block of docs/python-api.md, each in a folder of its own with funds.csv, against the
    stand-in where an example calls Gemini; the comments' figures are what it prints."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 5
    printed = []
    for i, block in enumerate(blocks):
        folder = tmp_path / f"example{i}"
        folder.mkdir()
        funds(folder)
        done = run_api(api_site, block, folder, env={"GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": fake.url})
        assert done.returncode == 0, f"example {i}:\n{block}\n{done.stderr}"
        assert not done.stderr, f"example {i} printed on stderr without being asked:\n{done.stderr}"
        printed.append(done.stdout)
    assert printed[0] == "completed 0 20\n"
    assert "did you mean 'search'?" in printed[1]
    assert printed[2] == "interrupted 130\ncompleted 0 20\n"
    assert "new job, 20 records to do" in printed[3]
    assert printed[4].startswith("0 $") and printed[4].endswith("True\n")


def test_a_callable_stage_resumes_in_another_process(api_site: Path, tmp_path: Path) -> None:
    """A python stage given as a callable is recorded by its name: a job started in one process continues in
    the next (no "the stages changed"), every record exactly once."""
    funds(tmp_path)
    code = """
        import enrichkit
        def domain(record):
            return {"email_domain": record["poc.email"].rpartition("@")[2]}
        stages = [{"name": "domain", "type": "python", "function": domain, "fields": {"email_domain": "string"}}]
        r = enrichkit.enrich("funds.csv", "out/o.csv", stages=stages, resume=True, max_workers=2, limit=LIMIT)
        print(r.status, r.exit_code, r.counts["completed"], r.counts["completed_this_run"])
    """
    first = run_api(api_site, code.replace("LIMIT", "5"), tmp_path)
    second = run_api(api_site, code.replace("LIMIT", "None"), tmp_path)
    assert first.stdout == "interrupted 1 5 5\n", first.stderr  # a --limit stop with records left: 1
    assert second.stdout == "completed 0 20 15\n", second.stderr
    ids = output_ids(tmp_path / "out" / "o.csv")
    assert len(ids) == len(set(ids)) == 20


def test_errors_are_raised_with_the_cli_exit_codes(api_site: Path, tmp_path: Path) -> None:
    funds(tmp_path)
    done = run_api(api_site, """
        import json, threading, enrichkit
        py = [{"name": "d", "type": "python", "function": "enrichkit.builtin:email_domain",
               "fields": {"email_domain": "string"}}]
        llm = [{"name": "poc", "prompt": "Who runs {fund.title}?", "fields": {"poc_name": "string"}}]
        found = {}
        def expect(name, call):
            try:
                call()
            except enrichkit.EnrichError as exc:
                found[name] = [type(exc).__name__, exc.exit_code, str(exc)]
        expect("typo", lambda: enrichkit.enrich("funds.csv", "o1.csv", stages=[{**py[0], "skip_if_filed": ["x"]}]))
        expect("missing", lambda: enrichkit.enrich("nope.csv", "o2.csv", stages=py))
        expect("option", lambda: enrichkit.enrich("funds.csv", "o3.csv", stages=py, max_worker=3))
        expect("range", lambda: enrichkit.enrich("funds.csv", "o4.csv", stages=py, max_workers=50))
        expect("key", lambda: enrichkit.enrich("funds.csv", "o5.csv", stages=llm))
        # Another Job holds the output: the second one is refused (exit 3), the first goes on.
        inside, release = threading.Event(), threading.Event()
        def hold(record):
            inside.set()
            release.wait(30)
            return {"email_domain": "x"}
        holder = enrichkit.Job("funds.csv", "o6.csv", max_workers=1,
                               stages=[{"name": "d", "type": "python", "function": hold,
                                        "fields": {"email_domain": "string"}}])
        worker = threading.Thread(target=lambda: found.setdefault("holder", holder.run().exit_code))
        worker.start()
        inside.wait(30)
        expect("locked", lambda: enrichkit.enrich("funds.csv", "o6.csv", stages=py, resume=True))
        release.set()
        worker.join(60)
        print(json.dumps(found))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["typo"][:2] == ["ConfigError", 2] and "did you mean 'skip_if_filled'?" in found["typo"][2]
    assert found["missing"][:2] == ["InputError", 2]
    assert found["option"][:2] == ["UsageError", 2] and "did you mean 'max_workers'?" in found["option"][2]
    assert found["range"][:2] == ["UsageError", 2]
    assert found["key"][:2] == ["AuthError", 2] and "GEMINI_API_KEY" in found["key"][2]
    assert found["locked"][:2] == ["LockedError", 3]
    assert found["holder"] == 0


def test_stop_from_another_thread_drains_and_a_resume_finishes(api_site: Path, tmp_path: Path) -> None:
    """`Job.stop()` from another thread: the records in flight finish, nothing new starts, the checkpoint says
    interrupted (exit 130); no signal handler was installed; `resume=True` does the rest, each record once."""
    funds(tmp_path)
    done = run_api(api_site, """
        import json, signal, threading, enrichkit
        reached, gate = threading.Event(), threading.Event()
        seen = []
        def domain(record):
            seen.append(record["fund.title"])
            if len(seen) == 3:
                reached.set()
                gate.wait(30)
            return {"email_domain": record["poc.email"].rpartition("@")[2]}
        stages = [{"name": "d", "type": "python", "function": domain, "fields": {"email_domain": "string"}}]
        handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
        job = enrichkit.Job("funds.csv", "out/o.csv", stages=stages, max_workers=1)
        results = []
        runner = threading.Thread(target=lambda: results.append(job.run()))
        runner.start()
        reached.wait(30)
        job.stop()
        gate.set()
        runner.join(60)
        first = results[0]
        assert handlers == [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
        cp = json.load(open("out/o.progress.json"))
        called = len(seen)
        again = enrichkit.enrich("funds.csv", "out/o.csv", stages=stages, resume=True)
        print(json.dumps([first.status, first.exit_code, first.counts["completed"], cp["status"], called,
                          again.status, again.exit_code, again.counts["completed"]]))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["interrupted", 130, 3, "interrupted", 3, "completed", 0, 20]
    ids = output_ids(tmp_path / "out" / "o.csv")
    assert len(ids) == len(set(ids)) == 20


def test_prints_nothing_unless_asked_and_events_tell_the_run(api_site: Path, tmp_path: Path) -> None:
    funds(tmp_path)
    quiet = run_api(api_site, """
        import enrichkit
        def bad(record):
            raise ValueError("no")   # failures are logged to the error log, not printed
        enrichkit.enrich("funds.csv", "q.csv", stages=[{"name": "d", "type": "python", "function": bad,
                                                        "fields": {"email_domain": "string"}}])
    """, tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    shown = run_api(api_site, """
        import json, enrichkit
        events = []
        r = enrichkit.enrich("funds.csv", "e.csv", stages=[{"name": "d", "type": "python",
                             "function": "enrichkit.builtin:email_domain", "fields": {"email_domain": "string"}}],
                             progress=True, on_event=events.append)
        kinds = [e.kind for e in events]
        last = [e.figures for e in events if e.kind == "progress"][-1]
        print(json.dumps([kinds[0], kinds[-1], events[-1].text, last.done, last.total]))
    """, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == ["line", "end", "Done: all 20 records enriched.", 20, 20]
    assert "new job" in shown.stderr and "Done: all 20 records enriched." in shown.stderr


def test_a_key_given_to_the_library_is_redacted_everywhere(api_site: Path, tmp_path: Path) -> None:
    """api_key= is registered as a secret by the library itself: a stage's error text carrying it reaches no
    file (error log, report, checkpoint) and no line."""
    funds(tmp_path)
    done = run_api(api_site, f"""
        import enrichkit
        from enrichkit.testing import FakeProvider
        def leaky(record):
            raise ValueError("calling with key {KEY}")
        llm = {{"name": "poc", "prompt": "Who runs {{fund.title}}?", "fields": {{"poc_name": "string"}}}}
        py = {{"name": "d", "type": "python", "function": leaky, "fields": {{"x": "string"}}}}
        r = enrichkit.enrich("funds.csv", "out/k.csv", api_key={KEY!r}, progress=True,
                             providers={{"llm": FakeProvider()}}, stages=[llm, py])
        print(r.exit_code, r.counts["failed"])
    """, tmp_path)
    assert done.stdout == "1 20\n", done.stderr
    written = [p for p in (tmp_path / "out").iterdir() if p.is_file()]
    assert any("calling with key ***" in p.read_text(encoding="utf-8") for p in written)
    assert all(KEY not in p.read_text(encoding="utf-8", errors="replace") for p in written)
    assert KEY not in done.stderr


def test_a_budget_stop_and_an_unreachable_api_come_back_in_the_result(api_site: Path, tmp_path: Path) -> None:
    funds(tmp_path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run_api(api_site, f"""
        import json, enrichkit
        from enrichkit.testing import FakeClock, FakeProvider
        llm = [{{"name": "poc", "prompt": "Who runs {{fund.title}}?", "fields": {{"poc_name": "string"}},
                "model": "gemini-2.5-flash"}}]
        budget = enrichkit.enrich("funds.csv", "b.csv", stages=llm, max_cost=0.0035, max_workers=1,
                                  providers={{"llm": FakeProvider()}}, clock=FakeClock())
        down = enrichkit.enrich("funds.csv", "d.csv", stages=llm, api_key="k", base_url="http://127.0.0.1:{port}")
        print(json.dumps([budget.status, budget.exit_code, budget.counts["completed"], down.status, down.exit_code,
                          type(down.error).__name__]))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    status, code, completed, *down = json.loads(done.stdout)
    assert (status, code) == ("budget_exhausted", 4) and 1 <= completed <= 3
    assert down == ["failed", 1, "OutageError"]


def test_the_readmes_python_example_runs(api_site: Path, tmp_path: Path) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    funds(tmp_path).rename(tmp_path / "companies.csv")
    (tmp_path / "stages.toml").write_text('''
[[stages]]
name = "domain"
type = "python"
function = "enrichkit.builtin:email_domain"
[stages.fields]
email_domain = "string"
''', encoding="utf-8")
    done = run_api(api_site, block, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "completed 0 20\n"


def test_a_key_in_a_env_file_is_used_and_os_environ_is_left_as_it_was(api_site: Path, tmp_path: Path,
                                                                      fake: FakeGemini) -> None:
    """The library reads the .env files (here the stages file's folder's: the key and the stand-in's address) as
    data: the key is sent (the stand-in refuses any other), and `os.environ` is the same after `enrich` and `Job`."""
    funds(tmp_path, 6)
    job = tmp_path / "job"
    job.mkdir()
    (job / ".env").write_text(f"GEMINI_API_KEY={KEY}\nGEMINI_BASE_URL={fake.url}\nJOB_ONLY=1\n", encoding="utf-8")
    (job / "stages.toml").write_text('[[stages]]\nname = "poc"\nmodel = "gemini-2.5-flash"\n'
                                     'prompt = "Who runs {fund.title}?"\n[stages.fields]\npoc_name = "string"\n',
                                     encoding="utf-8")
    fake.configure(require_key=KEY)
    done = run_api(api_site, """
        import json, os, enrichkit
        before = dict(os.environ)
        first = enrichkit.enrich("funds.csv", "out/e.csv", stages="job/stages.toml", limit=2)
        after_enrich = dict(os.environ) == before
        with enrichkit.Job("funds.csv", "out/e.csv", resume=True) as job:
            second = job.run()
        print(json.dumps([first.exit_code, second.exit_code, second.counts["completed"], after_enrich,
                          dict(os.environ) == before, "GEMINI_API_KEY" in os.environ, "JOB_ONLY" in os.environ]))
    """, tmp_path, env={"HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [1, 0, 6, True, True, False, False]
    assert fake.stats()["generate"] == 6  # every record asked the stand-in, with the key from the .env file
