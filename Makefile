# Two commands on a fresh machine with only Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-slow lint bench clean baseline regress fuzz validate docs

# The regression suite: small scenarios (file stem = scenario name) and their saved results.
REGRESSION  := $(sort $(wildcard scenarios/regression/*.yaml))
BASELINES   := tests/baseline
REGRESS_OUT := ci-artifacts/regression

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/migsim run scenarios/quickstart.yaml -o results/quickstart

lint: $(STAMP)
	$(BIN)/ruff check sim tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# Long fuzzing runs with fresh random examples: the XBZRLE decoder (FUZZ_EXAMPLES per test, about
# 2 ms each), the QMP server (its own counts) and random mutations of a scenario file
# (SCENARIO_FUZZ_EXAMPLES per test, about 10 ms each). `make fuzz FUZZ_EXAMPLES=20000` for less.
FUZZ_EXAMPLES          ?= 200000
SCENARIO_FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	MIGSIM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -m '' \
	  --hypothesis-show-statistics tests/test_fuzz_decoder.py tests/test_qmp_fuzz.py
	MIGSIM_SCENARIO_FUZZ_EXAMPLES=$(SCENARIO_FUZZ_EXAMPLES) $(BIN)/python -m pytest \
	  --hypothesis-show-statistics tests/test_bad_scenarios.py -k 'mutated or random_overrides'

# The model against closed forms, published results and (when QEMU is installed) real QEMU,
# each real case migrated VALIDATE_REPEAT times and judged on QEMU's mean, with real Linux guests
# captured and replayed (each skipped when its packages are missing; about 20 min on 2 cores).
VALIDATE_REPEAT ?= 3
validate: $(STAMP)
	$(BIN)/migsim validate --real-qemu --linux --repeat $(VALIDATE_REPEAT) -o ci-artifacts/validation

# Regenerate the regression baselines, on purpose (after a change meant to move the numbers).
baseline: $(STAMP)
	rm -rf $(BASELINES)
	$(BIN)/migsim run $(REGRESSION) -o $(BASELINES) --no-plots

# Run the suite into $(REGRESS_OUT)/current and compare each scenario with its baseline
# (drift.csv and figures in $(REGRESS_OUT)/compare/<name>); fails on any drift or missing one.
regress: $(STAMP)
	rm -rf $(REGRESS_OUT)
	$(BIN)/migsim run $(REGRESSION) -o $(REGRESS_OUT)/current
	@status=0; \
	for name in $(sort $(notdir $(wildcard $(BASELINES)/*)) $(notdir $(REGRESSION:.yaml=))); do \
	  echo "== $$name"; \
	  $(BIN)/migsim compare $(BASELINES)/$$name $(REGRESS_OUT)/current/$$name \
	    -o $(REGRESS_OUT)/compare/$$name || status=1; \
	done; \
	if [ $$status -ne 0 ]; then echo "regress: drift (figures in $(REGRESS_OUT)/compare/)"; fi; \
	exit $$status

# The docs site (site/): the reference pages are generated from the code's tables first; --strict
# makes a warning (a broken link or anchor, a page left out of the nav) fail the build.
docs: $(STAMP)
	$(BIN)/python -m sim.reference docs/reference
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site results .pytest_cache .mypy_cache .ruff_cache .hypothesis
