# mimi-cli: every install step lives here, so a clean clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned so pip takes the CPU build where one is provided locally; override for CUDA/MPS machines.
TORCH_VERSION ?= 2.13.0
WEIGHTS ?= synthetic

.PHONY: install test lint bench demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

# Speed and live-stream capacity of this machine (benchmarks/ holds the finer-grained scripts), on
# WEIGHTS: synthetic by default, as speed does not depend on weight values.
bench: install
	$(VENV)/bin/mimi bench --weights $(WEIGHTS)

# Offline demo on synthetic weights (the Hub is not needed): audio -> tokens -> audio, then `mimi info`.
demo: install
	$(PY) scripts/make_audio.py demo/audio
	$(VENV)/bin/mimi encode demo/audio demo/tokens.parquet --weights $(WEIGHTS) --overwrite
	$(VENV)/bin/mimi decode demo/tokens.parquet demo/decoded --weights $(WEIGHTS) --overwrite
	$(VENV)/bin/mimi info demo/tokens.parquet

clean:
	rm -rf $(VENV) demo
