# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-heavy lint bench reproduce study-results docs clean

# The tests and the demo start many Python processes (CLI subprocesses, sweep workers, Ray nodes). Where the
# environment sets PYTHONDONTWRITEBYTECODE, each would compile torch and tsprune from source again (~4 s apiece):
# they share one bytecode cache inside the venv instead (`make clean` removes it with the venv).
CACHED := env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(CURDIR)/$(VENV)/pycache

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# --no-compile: Python compiles each module when it is first imported; compiling all of torch up front took
	@# ~2.5 of the ~3.5 set-up minutes on a 2-core machine.
	$(BIN)/pip install --quiet --no-compile -c requirements.lock -e ".[ray,test,export]"
	@# The C++ sparse kernel, compiled once into ~/.cache/tsprune (without a compiler: one warning, torch's kernels).
	$(BIN)/python -m tsprune.sparse.kernel
	touch $(STAMP)

demo: install
	$(CACHED) $(BIN)/tsprune demo --out demo

test: install
	$(CACHED) $(BIN)/python -m pytest tests

# The checks too slow for the 10-minute suite (every model exported to ONNX, dense and pruned); CI runs them too.
test-heavy: install
	$(CACHED) $(BIN)/python -m pytest tests -m heavy

lint: install
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/train_speed.py

# Full default trainings of the five models on ETTh1/96 against the published MSE (hours on a 2-core CPU;
# resumable: run it again after an interruption).
reproduce: install
	$(BIN)/python benchmarks/reproduce.py --runs runs/reproduce

# The study at real scale (preset study-etth1): export the sweep's table, write its report, the findings of its
# results page (docs/results/study-etth1.md) and the README's headline table from that table. SWEEP is the sweep
# directory (`tsprune sweep run study-etth1 --dir ...`); without it, only the report, the findings and the headline
# are rebuilt from the committed table. The report reads the study's extra seeds
# (seeds-etth1) and the small models (small-etth1) with it, and the frontier's costs, where they are committed
# (tests/test_findings.py reads the same tables).
STUDY := benchmarks/results/study-etth1
STUDY_TABLES := $(STUDY)/results.parquet $(wildcard benchmarks/results/seeds-etth1/results.parquet) \
  $(wildcard benchmarks/results/small-etth1/results.parquet)
FRONTIER_COSTS := $(wildcard benchmarks/results/frontier/costs.csv)
study-results: install
	@if [ -n "$(SWEEP)" ]; then $(BIN)/tsprune results $(SWEEP) --export $(STUDY)/results.parquet && \
	  $(BIN)/tsprune results $(SWEEP) --export $(STUDY)/results.csv; fi
	$(BIN)/tsprune report $(STUDY_TABLES) --out $(STUDY)/report --title "The study on ETTh1/96 in tsprune" \
	  --readme docs/results/study-etth1.md $(if $(FRONTIER_COSTS),--costs $(FRONTIER_COSTS))
	$(BIN)/python docs/hooks/headline.py README.md

# The manual (mkdocs.yml, docs/): `mkdocs build --strict` into site/ (open site/index.html). The docs extra is
# installed into .venv on first use, so a fresh clone needs nothing else.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) pyproject.toml requirements.lock
	$(BIN)/pip install --quiet --no-compile -c requirements.lock -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) demo build dist site src/*.egg-info
