# digits: train, export and serve a handwritten-digit CNN the TensorFlow Serving way.
# `make test` builds everything it needs from nothing: venv, packages, data, browser, linters.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
DATA_DIR   ?= $(or $(DIGITS_DATA_DIR),data)
MODELS_DIR ?= models
MODEL_NAME ?= mnist
PRESET     ?= fast
ARGS       ?=

# Folder names are quoted in the recipes: a DATA_DIR or MODELS_DIR with spaces is passed whole. ARGS is not:
# it is several words. DATA_DIR defaults to $DIGITS_DATA_DIR, what every command reads, and is exported as it.
export DIGITS_DATA_DIR := $(DATA_DIR)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help setup data data-mnist train reproduce-seed tune up demo test test-all lint bench bench-train \
        bench-serve soak browsers tools clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' || { echo \
	  "Python 3.11 or 3.12 is needed, $(PYTHON) is $$($(PYTHON) --version 2>&1): add PYTHON=python3.12" >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project with its dev tools

data: setup  ## fetch MNIST and Fashion-MNIST, convert to mnist.npz layout, verify checksums
	$(BIN)/digits-train data --data-dir "$(DATA_DIR)"

# MNIST alone, for the targets that read nothing else: Fashion-MNIST comes through apt-get (Debian/Ubuntu).
data-mnist: setup
	$(BIN)/digits-train data --dataset mnist --data-dir "$(DATA_DIR)"

train: data-mnist  ## train PRESET (default: fast) and export the next version to models/mnist
	$(BIN)/digits-train train --preset "$(PRESET)" --models-dir "$(MODELS_DIR)" --model-name "$(MODEL_NAME)" \
	  $(ARGS)

reproduce-seed: data-mnist  ## train the tutorial's six presets and write reports/reproduce_seed.md
	$(BIN)/digits-train reproduce-seed --data-dir "$(DATA_DIR)" $(ARGS)

tune: data-mnist  ## hyperparameter search (KerasTuner); ARGS='--budget 30'
	$(BIN)/digits-train tune --data-dir "$(DATA_DIR)" $(ARGS)

up: data-mnist  ## train a model if none exists, then serve it (gRPC 8500, REST 8501) and the gateway (8080)
	MODELS_DIR="$(MODELS_DIR)" MODEL_NAME="$(MODEL_NAME)" PRESET="$(PRESET)" bash scripts/up.sh

demo: data-mnist  ## a short end-to-end run: train, export, serve, evaluate, print the results
	bash scripts/demo.sh

browsers:  ## Debian's Chromium for the drawing-page test
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

tools:  ## static checker for compose (hadolint and kubectl with kustomize v5 come from PyPI); curl for the README test
	@command -v docker-compose >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose; }
	@command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends curl; }

test: data browsers tools  ## the whole default test suite (fast, offline)
	$(PY) -m pytest -m "not slow" $(ARGS)

test-all: data browsers tools  ## every test, the slow full-data ones too
	$(PY) -m pytest $(ARGS)

lint: setup  ## ruff
	$(BIN)/ruff check trainer serving client tests bench scripts

bench:  ## both benchmarks: both run, and it fails if either misses a target
	@status=0; $(MAKE) --no-print-directory bench-train || status=1; \
	$(MAKE) --no-print-directory bench-serve || status=1; exit $$status

bench-train: data-mnist  ## tutorial seed-best vs the fast preset, side by side
	$(PY) bench/train_bench.py $(ARGS)

bench-serve: data-mnist  ## serving latency and throughput, ratios in one run
	$(PY) bench/serve_bench.py $(ARGS)

soak: data-mnist  ## reliability under hot-swaps, corrupt versions, restarts and disconnects
	$(PY) bench/soak.py $(ARGS)

clean:  ## remove generated files (keeps data/ and models/)
	rm -rf reports .pytest_cache .ruff_cache build *.egg-info
