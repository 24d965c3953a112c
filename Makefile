# parcelscan: the two commands of the quick start are `make demo` and `make test`.
# Both build their own virtual environment from this repository's files only.

PYTHON_BOOT ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
DEMO_OUT    ?= runs/demo
# pytest-xdist workers for `make test` (0: one process). Two: 10 min against 15 on a 2-core machine (README, Development)
TEST_WORKERS ?= 2

.PHONY: demo test lint install browser postgres bench clean

$(STAMP): pyproject.toml
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[sim,train,review,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@mkdir -p $(DEMO_OUT)
	@echo "== parcelscan inspect: the shipped default model on the sample scans in examples/scans =="
	$(PY) -m parcelscan inspect examples/scans --heatmaps $(DEMO_OUT)/heatmaps --station demo \
	  > $(DEMO_OUT).verdicts.jsonl; status=$$?; cat $(DEMO_OUT).verdicts.jsonl; \
	  echo "parcelscan inspect exit code $$status (0 all clear, 1 suspect, 2 not analysed)"; \
	  echo "verdicts: $(DEMO_OUT).verdicts.jsonl, heatmaps: $(DEMO_OUT)/heatmaps/"; test $$status -le 2

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The review app's browser test drives Debian's Chromium (never a browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install -y chromium'"; fi; }

# The central review server's tests start a throwaway PostgreSQL cluster (initdb, pg_ctl) from Debian's
# postgresql package; without it they fail, they never skip.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "postgresql missing: run 'sudo apt-get install -y postgresql'"; fi; }

test: $(STAMP) browser postgres
	$(VENV)/bin/ruff check .
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope

bench: $(STAMP)
	$(PY) benchmarks/physics_bench.py
	$(PY) benchmarks/simulate_bench.py
	$(PY) benchmarks/inspect_bench.py
	$(PY) benchmarks/onnx_vs_torch_bench.py

clean:
	rm -rf runs .pytest_cache .ruff_cache

# Each shipped model end to end on 2 CPU cores (README model cards, "Reproduce"): simulate the training scans
# (stress mix, postal stream, shielded) → merge and split → train (training/recipes/<name>.yaml) → simulate the
# clear-only postal calibration set → export → threshold for Pfa 1 % over all its clear parcels → export with
# that operating point → the weights-only .pt. Output: $(REPRO_DIR)/<name>/parcelscan-<name>.onnx and .pt.
REPRO_DIR ?= data/repro
.PHONY: reproduce-dual reproduce-rgb
reproduce-dual: $(STAMP)
	PY=$(PY) bash training/recipes/reproduce.sh dual $(REPRO_DIR)/dual
reproduce-rgb: $(STAMP)
	PY=$(PY) bash training/recipes/reproduce.sh rgb $(REPRO_DIR)/rgb
