# enrichkit — every target makes its own virtualenv from requirements*.txt first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Tests and tools write bytecode caches: without them every test process compiles enrichkit again, and pytest
# rewrites every test module's asserts on every run (seconds each time), whatever the shell says.
unexport PYTHONDONTWRITEBYTECODE

INPUT  ?= data/sample.csv
OUTPUT ?= out/enriched.csv
STAGES ?= data/stages.toml
ARGS   ?=

.PHONY: install demo demo-batch enrich test slow unit lint typecheck bench status clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

## demo: the main job end to end against the bundled Gemini stand-in (no key needed)
demo: $(STAMP)
	$(PY) scripts/demo.py

## enrich: one line for a terminal or a crontab; starts, continues, or exits 0 when done
## (ARGS=--retry-failed or --fresh takes the place of --resume: each is a run of its own)
enrich: $(STAMP)
	$(PY) scripts/enrich.py --input "$(INPUT)" --output "$(OUTPUT)" --stages-file "$(STAGES)" \
		$(if $(filter --retry-failed --fresh,$(ARGS)),,--resume) $(ARGS)

## demo-batch: the same job in batch mode (--batch, run as cron would) on the stand-in's accelerated clock
demo-batch: $(STAMP)
	$(PY) scripts/demo_batch.py

## test: lint, types and the suite (CI runs this, then `make slow`). Three workers on two cores: a third of a
## test's time is waiting on a process, a socket or a file.
test: $(STAMP)
	$(PY) -m ruff check lib scripts tests
	$(PY) -m mypy
	$(PY) -m pytest -q -n 3 -m "not slow"

## slow: the variants `make test` leaves out (every crash point, each README command in a fresh shell, the browser)
slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow

## unit: the tests that start no process and no server, in seconds
unit: $(STAMP)
	$(PY) -m pytest -q -m "not e2e and not slow"

lint: $(STAMP)
	$(PY) -m ruff check lib scripts tests

typecheck: $(STAMP)
	$(PY) -m mypy

## bench: throughput, overhead, memory, resume and fault figures (prints a table, writes bench/results.json)
bench: $(STAMP)
	$(PY) scripts/bench.py

## dashboard: a web page over the jobs under DIR (default: .) on http://127.0.0.1:8765 (PORT=... to change)
.PHONY: dashboard
dashboard: $(STAMP)
	$(PY) scripts/jobs.py serve "$(or $(DIR),.)" --port "$(or $(PORT),8765)"

## status: the default job's state
status: $(STAMP)
	$(PY) scripts/jobs.py status $(basename $(OUTPUT)).progress.json

clean:
	rm -rf out bench/work .pytest_cache .ruff_cache
