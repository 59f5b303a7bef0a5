# camkit: one Makefile does every set-up step, so a fresh clone needs only Python >= 3.10.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DEMO_METHODS := gradcam gradcampp layercam ablationcam eigencam

.PHONY: all test test-all lint demo bench bench-runner faithfulness docs clean

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,dev,docs]"
	touch $(STAMP)

# The HTML report's browser test needs Debian's chromium; the script installs it when it can
# (root + apt) and otherwise says why, and the test skips with the same reason.
test: $(STAMP)
	sh scripts/ensure_chromium.sh
	$(PY) -m pytest -q

# Everything `make test` runs, plus the `heavy` marker: 1,000-extraction leak runs per method family
# and front door, 300-case hypothesis runs per front door, torch.compile with inductor.
test-all: $(STAMP)
	sh scripts/ensure_chromium.sh
	$(PY) -m pytest -q -m "heavy or not heavy"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy

# Explain a bundled photo with the offline pretrained EfficientNet-Lite0 and write the overlays.
demo: $(STAMP)
	$(VENV)/bin/camkit explain assets/chelsea.png $(foreach m,$(DEMO_METHODS),--method $(m)) --out demo-out
	@echo "make demo: the figure is demo-out/chelsea_grid.png (one overlay per method beside it)"

bench: $(STAMP)
	$(PY) benchmarks/latency.py

bench-runner: $(STAMP)
	$(PY) benchmarks/runner.py

docs: $(STAMP)
	$(PY) scripts/gen_docs.py
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
