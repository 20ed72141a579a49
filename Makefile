# The two commands: `make report` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup report test test-fast demo-data bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "iop-research needs Python 3.10 or newer; set PYTHON=python3.x")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Execute the notebooks on the bundled demo data and write HTML reports to reports/.
report: $(STAMP)
	$(BIN)/iop-research report --out reports

# Whole suite: unit, property, R comparisons (when Rscript exists), doctests, nbval.
# pytest's exit code 5 (no tests collected) is non-zero and fails this target.
test: $(STAMP)
	$(BIN)/python -m pytest tests iop_research --doctest-modules -p no:cacheprovider
	$(BIN)/python -m pytest --nbval --nbval-sanitize-with iop_research/reports/notebooks/sanitize.cfg iop_research/reports/notebooks -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -x -q -m "not slow and not spark"

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
	rm -rf $(VENV) reports .pytest_cache
