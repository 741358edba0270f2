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
SOURCE ?= auto
data: env ## dvc pull data.dvc's version if a remote is usable, else the embedded Br35H set (SOURCE=auto|remote|embedded, or DATA=<root>); split, validate
	@case "$(DATA)" in data|data/*) $(RUN) python -m lightning_app.data.versioning fetch --source $(SOURCE) || exit $$?;; esac; \
	if [ "$(DATA)" = "data/br35h" ]; then $(RUN) python -m lightning_app.data prepare --root $(DATA) --embedded; \
	else $(RUN) python -m lightning_app.data prepare --root $(DATA); fi

validate-data: env ## re-check DATA against its split manifest; prints a table, writes validation.json
	$(RUN) python -m lightning_app.data validate --root $(DATA)

## ---- data versioning ---------------------------------------------------------
.PHONY: data-push data-pull data-remote
data-push: validate-data ## dvc add data/ + dvc push to the remote; then commit data.dvc
	$(RUN) python -m lightning_app.data.versioning push

data-pull: env ## dvc pull exactly the version data.dvc names; fails clearly if the remote is not usable
	$(RUN) python -m lightning_app.data.versioning fetch --source remote

data-remote: env ## BUCKET=<name>: point the DVC remote at gs://<name> in .dvc/config (no credentials)
	@test -n "$(BUCKET)" || { echo "error: usage: make data-remote BUCKET=<your-gcs-bucket>" >&2; exit 2; }
	$(RUN) python -m lightning_app.data.versioning set-remote "$(BUCKET)"

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

## ---- cloud -------------------------------------------------------------------
.PHONY: vertex-train docker-lint precommit
SPEC ?= configs/vertex/single.yaml
vertex-train: check-config env ## Vertex AI job for CONFIG [SPEC=configs/vertex/ddp.yaml REPLICAS=N] [DRY_RUN=1: print it]
	DRY_RUN=$(DRY_RUN) $(RUN) python -m lightning_app.vertex --config $(CONFIG) --spec $(SPEC) $(if $(REPLICAS),--replicas $(REPLICAS))

docker-lint: env ## hadolint on dockerfiles/*.dockerfile
	$(RUN) hadolint dockerfiles/train.dockerfile dockerfiles/serve.dockerfile dockerfiles/ui.dockerfile

precommit: env ## every pre-commit hook on all files (ruff, mypy, hadolint, schemas, whitespace, YAML)
	$(RUN) pre-commit run --all-files --show-diff-on-failure

## ---- serving -----------------------------------------------------------------
.PHONY: mar serve loadtest bench-serve bench-ood bench-explain
SERVE_PORT ?= $(or $(PORT),8080)
USERS ?= 20
DURATION ?= 60s
mar: env ## CKPT (default: newest best-*.ckpt under runs/) -> model_store/brain_mri.mar
	$(RUN) python -m lightning_app.export $(if $(CKPT),--ckpt "$(CKPT)") --runs runs --out model_store $(if $(wildcard $(DATA)/split.csv),--data $(DATA))

serve: env ## TorchServe in the foreground on 127.0.0.1:$PORT (8080) with model_store/brain_mri.mar
	PORT=$(SERVE_PORT) $(RUN) python -m serve

loadtest: env ## locust headless, USERS (20) for DURATION (60s), against the running server: reports/loadtest_*.csv
	@mkdir -p reports
	$(RUN) locust -f serve/locustfile.py --headless -u $(USERS) -r $(USERS) -t $(DURATION) \
		--host http://127.0.0.1:$(SERVE_PORT) --csv reports/loadtest --only-summary

bench-serve: env ## TorchServe .mar vs the seed's FastAPI design, 20 users x 60 s each (~3 min) [SWEEP=1: + batching sweep]
	$(RUN) python benchmarks/bench_serve.py $(if $(CKPT),--ckpt "$(CKPT)") $(if $(SWEEP),--sweep)

bench-ood: env ## OOD guard: flagged rates on held-out MRIs, corrupted MRIs and non-MRI images from PyPI packages [CKPT=]
	$(RUN) python benchmarks/bench_ood.py $(if $(CKPT),--ckpt "$(CKPT)") --data $(DATA)

bench-explain: env ## heatmap hot spots inside the head, /explanations vs /predictions latency, OOD cost on RPS [CKPT=]
	$(RUN) python benchmarks/bench_explain.py $(if $(CKPT),--ckpt "$(CKPT)") --data $(DATA)

## ---- demo ----------------------------------------------------------------------
.PHONY: ui demo
UI_PORT ?= 7860
DEMO_PORT ?= 8080
ui: env ## the Gradio page only, on 127.0.0.1:$UI_PORT (7860), against INFERENCE_URL (http://127.0.0.1:8080)
	UI_PORT=$(UI_PORT) $(RUN) python -m lightning_app.ui

demo: data ## data, train (or reuse a best checkpoint in runs/), .mar, then TorchServe + the page; Ctrl-C stops both
	@if find runs -path '*/checkpoints/best-*.ckpt' 2>/dev/null | grep -q .; then \
		echo "demo: reusing the newest best checkpoint under runs/ (make fit trains a new one)"; \
	else $(MAKE) --no-print-directory fit; fi
	$(MAKE) --no-print-directory mar
	$(RUN) python -m lightning_app.ui.demo --mar model_store/brain_mri.mar --inference-port $(DEMO_PORT) --ui-port $(UI_PORT)

.PHONY: clean
clean: ## remove runs, caches and build outputs (keeps data/ and .venv)
	rm -rf runs .cache model_store reports .pytest_cache .mypy_cache .ruff_cache .coverage coverage.xml
