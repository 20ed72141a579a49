# The two commands: `make report` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# second test environment: pandas 2.2 with the lifelines cross-checks (lifelines needs pandas < 3)
VENV2  := .venv-pandas2
BIN2   := $(VENV2)/bin
STAMP2 := $(VENV2)/.installed

.PHONY: setup report test test-main test-pandas2 lint test-fast demo-data bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "iop-research needs Python 3.10 or newer; set PYTHON=python3.x")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

$(STAMP2): pyproject.toml
	test -x $(BIN2)/python || $(PYTHON) -m venv $(VENV2)
	$(BIN2)/python -m pip install --quiet --upgrade pip
	$(BIN2)/python -m pip install --quiet -e ".[test,crosscheck]" "pandas>=2.2,<2.3"
	touch $(STAMP2)

# Execute the notebooks on the bundled demo data and write HTML reports to reports/.
report: $(STAMP)
	$(BIN)/iop-research report --out reports

# Whole suite: lint, unit, property, R comparisons (when Rscript exists), doctests, nbval on
# pandas 3.x; then the estimator and pipeline tests again on pandas 2.2 with the lifelines
# cross-checks. pytest's exit code 5 (no tests collected) is non-zero and fails this target.
test: test-main test-pandas2

lint: $(STAMP)
	$(BIN)/ruff check iop_research tests benchmarks

test-main: $(STAMP) lint
	$(BIN)/python -m pytest tests iop_research --doctest-modules -p no:cacheprovider
	$(BIN)/python -m pytest --nbval --nbval-sanitize-with iop_research/reports/notebooks/sanitize.cfg iop_research/reports/notebooks -p no:cacheprovider

# pandas 2.2 job (smaller): everything but the report, notebook and wheel tests, which run above.
test-pandas2: $(STAMP2)
	$(BIN2)/python -c 'import pandas, sys; sys.exit(0 if pandas.__version__.startswith("2.2") else "not pandas 2.2: " + pandas.__version__)'
	IOP_REQUIRE_LIFELINES=1 $(BIN2)/python -m pytest tests -p no:cacheprovider -q -m "not slow and not spark" \
		--ignore=tests/test_report.py --ignore=tests/test_cli.py --ignore=tests/test_wheel.py \
		--ignore=tests/test_notebook_numbers.py --ignore=tests/test_notebook_hygiene.py --ignore=tests/test_gate.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -x -q -m "not slow and not spark" --ignore=tests/test_wheel.py

demo-data: $(STAMP)
	$(BIN)/iop-research simulate --n-patients 3000 --seed 20261127 --out iop_research/datasets/demo

# Benchmarks (minutes each, several GB of scratch data in benchmarks/_work/); figures in benchmarks/README.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/python benchmarks/synth_marginals.py
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_km.py
	$(BIN)/python benchmarks/bench_cox.py
	$(BIN)/python benchmarks/bench_teds.py
	$(BIN)/python benchmarks/bench_report.py

clean:
	rm -rf $(VENV) $(VENV2) reports .pytest_cache
