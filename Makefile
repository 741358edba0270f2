# Brain-MRI tumour classifier. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CONFIG ?= configs/default.yaml
DATA ?= data/br35h
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen

export WANDB_MODE ?= offline
export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT ?= false

.PHONY: help
help: ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

## ---- environment -------------------------------------------------------------
.PHONY: env
env: .venv/.synced ## install uv if missing, then the locked environment (uv sync --frozen)
.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

## ---- data --------------------------------------------------------------------
.PHONY: data validate-data
data: env ## materialise the embedded Br35H set (or DATA=<root>), split it, validate it
	@if [ "$(DATA)" = "data/br35h" ]; then $(RUN) python -m lightning_app.data prepare --root $(DATA) --embedded; \
	else $(RUN) python -m lightning_app.data prepare --root $(DATA); fi

validate-data: env ## re-check DATA against its split manifest; prints a table, writes validation.json
	$(RUN) python -m lightning_app.data validate --root $(DATA)

## ---- training ----------------------------------------------------------------
.PHONY: fit check-config
check-config:
	@test -f "$(CONFIG)" || { echo "error: config file not found: $(CONFIG) (see configs/)" >&2; exit 2; }

fit: check-config data ## train CONFIG on DATA, then test the best checkpoint on the held-out split
	$(RUN) python -m lightning_app fit --config $(CONFIG) --data.data_dir $(DATA)

## ---- quality -----------------------------------------------------------------
.PHONY: test lint format
test: env ## the whole test suite with coverage (what CI runs)
	$(RUN) pytest

lint: env ## ruff (lint + format check) and mypy
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: env ## apply ruff formatting and safe fixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

## ---- benchmarks --------------------------------------------------------------
.PHONY: bench-train
bench-train: data ## default config: accuracy, wall time, peak RSS; Lightning vs plain PyTorch throughput
	$(RUN) python benchmarks/bench_train.py --config $(CONFIG) --data $(DATA)

.PHONY: clean
clean: ## remove runs, caches and build outputs (keeps data/ and .venv)
	rm -rf runs .cache model_store reports .pytest_cache .mypy_cache .ruff_cache .coverage coverage.xml
