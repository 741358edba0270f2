# Brain-MRI tumour classifier. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CONFIG ?= configs/default.yaml
DATA ?= data/br35h
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen

# W&B: online when WANDB_API_KEY is set and WANDB_MODE is not (lightning_app.training.runinfo.wandb_mode);
# WANDB_MODE is never set here, so that rule sees the caller's environment.
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
.PHONY: data validate-data data-evidence
SOURCE ?= auto
data: env ## dvc pull data.dvc's version if a remote is usable, else the embedded Br35H set (SOURCE=auto|remote|embedded, or DATA=<root>); split, validate
	@case "$(DATA)" in data|data/*) $(RUN) python -m lightning_app.data.versioning fetch --source $(SOURCE) || exit $$?;; esac; \
	if [ "$(DATA)" = "data/br35h" ]; then $(RUN) python -m lightning_app.data prepare --root $(DATA) --embedded; \
	else $(RUN) python -m lightning_app.data prepare --root $(DATA); fi

validate-data: env ## re-check DATA against split.csv (files, near-duplicate leaks across splits); table + validation.json
	$(RUN) python -m lightning_app.data validate --root $(DATA)

data-evidence: env ## near-duplicate groups per pHash threshold on DATA, and margin pairs as PNGs under reports/neardup
	$(RUN) python -m lightning_app.data evidence --root $(DATA) --out reports/neardup

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
	@for c in $(CONFIG); do test -f "$$c" || { echo "error: config file not found: $$c (see configs/)" >&2; exit 2; }; done

fit: check-config data ## train CONFIG (one file or "a.yaml b.yaml", on configs/base.yaml) on DATA; calibrate; test with CIs
	$(RUN) python -m lightning_app fit $(foreach c,$(CONFIG),--config $(c)) --data.data_dir $(DATA)

# The served default: the recipe that `make cv` chose, a seed ensemble (docs/cv_study.md), its
# first member a three-quarter-width ResNet-18 (docs/benchmarks.md (z)): ENSEMBLE_BACKBONES
# names each member's backbone in the order of ENSEMBLE_SEEDS (empty: CONFIG's own).
# ENSEMBLE_THRESHOLD: that ensemble's out-of-fold choice for 97 % tumour sensitivity
# (docs/benchmarks.md (y)); empty: chosen on validation.
ENSEMBLE_SEEDS ?= 42 7 11
ENSEMBLE_BACKBONES ?= resnet18_w48 resnet18 resnet18
ENSEMBLE_THRESHOLD ?= 0.248
# The served ensemble's cascade (`make demo`; docs/benchmarks.md "(u)", (z)): its first member
# alone where its top probability reaches ENSEMBLE_CASCADE and its screening score lies
# ENSEMBLE_CASCADE_MARGIN log-odds off the threshold; chosen out of fold and on validation.
# `make mar` serves the whole ensemble unless CASCADE is given; CASCADE_FALLBACK=1 serves the
# whole ensemble where the cascade's gate refuses a training draw (and says so) instead of failing.
ENSEMBLE_CASCADE ?= 0.95
ENSEMBLE_CASCADE_MARGIN ?= 2
CASCADE_ARGS = $(if $(CASCADE),--cascade $(CASCADE) $(if $(CASCADE_MARGIN),--cascade-margin $(CASCADE_MARGIN)) $(if $(CASCADE_FALLBACK),--cascade-fallback))
.PHONY: fit-ensemble
fit-ensemble: check-config data ## the served default (~15 min on 2 cores): CONFIG trained at each of ENSEMBLE_SEEDS (42 7 11) with ENSEMBLE_BACKBONES (resnet18_w48 first), assembled into ONE network averaging their calibrated probabilities, tested once; runs/ensemble/ [ENSEMBLE_THRESHOLD=0.248: out-of-fold; empty: validation]
	@set -- $(ENSEMBLE_BACKBONES); for s in $(ENSEMBLE_SEEDS); do \
		$(RUN) python -m lightning_app fit $(foreach c,$(CONFIG),--config $(c)) --data.data_dir $(DATA) \
			$${1:+--model.backbone $$1} --seed_everything $$s \
			--trainer.default_root_dir runs/ensemble/members/seed$$s || exit $$?; \
		if [ $$# -gt 0 ]; then shift; fi; \
	done
	$(RUN) python -m lightning_app.training.assemble $(foreach s,$(ENSEMBLE_SEEDS),runs/ensemble/members/seed$(s)) \
		--out runs/ensemble $(if $(ENSEMBLE_THRESHOLD),--threshold $(ENSEMBLE_THRESHOLD) \
		--threshold-source "out-of-fold (make cv of the members $(ENSEMBLE_BACKBONES) at seeds $(ENSEMBLE_SEEDS), probabilities averaged)")

.PHONY: model-card
model-card: env ## docs/model_card.md from a run's metrics.json [RUN_DIR=runs/.../version_N; default: the newest under runs/ensemble, the served default]
	$(RUN) python -m lightning_app.training.model_card $(if $(RUN_DIR),--run $(RUN_DIR))

## ---- cross-validation ------------------------------------------------------
.PHONY: cv cv-compare cv-seeds cv-errors
FOLDS ?= 5
CV_NAME ?= default
cv: check-config data ## stratified grouped FOLDS-fold CV of CONFIG over DATA's train+val groups (test split untouched): each fold fit + calibrate + out-of-fold test; resumable; pooled table with group-bootstrap CIs in runs/cv/CV_NAME/ [FOLDS=5 CV_NAME=default CV_SET="k=v ..." CV_ONLY=0,1,2 CV_LOCK=file]
	$(RUN) python -m lightning_app.training.cv --name $(CV_NAME) --folds $(FOLDS) $(if $(CV_ONLY),--only $(CV_ONLY)) $(if $(CV_LOCK),--lock $(CV_LOCK)) \
		$(foreach c,$(CONFIG),--config $(c)) --set data.data_dir=$(DATA) $(foreach s,$(CV_SET),--set $(s))

cv-compare: env ## paired CV comparison, lever arm - base arm, on their common folds; an arm is one run or several seeds, compared mean against mean [BASE=runs/cv/default,runs/cv/seed7 LEVER=runs/cv/X,runs/cv/X-seed7]
	$(if $(LEVER),,$(error cv-compare needs LEVER=runs/cv/NAME[,runs/cv/NAME2]))
	$(RUN) python -m lightning_app.training.cv_compare $(or $(BASE),runs/cv/default) $(LEVER)

cv-seeds: env ## one recipe at several training seeds: each CV run's pooled metrics, mean +- SD and range, the shipped threshold's sensitivity on each [RUNS=runs/cv/default,runs/cv/seed7,runs/cv/seed11]
	$(if $(RUNS),,$(error cv-seeds needs RUNS=runs/cv/NAME,runs/cv/NAME2[,...]))
	$(RUN) python -m lightning_app.training.cv_seeds $(RUNS)

comma := ,
cv-errors: env ## where the out-of-fold errors are over several CV runs: images wrong in k of them, the groups every run gets wrong, a captioned sheet of their scans [RUNS=runs/cv/default,runs/cv/seed7 TOP=20 SHEET=file.png CUES=1: grey level and fill of wrong vs right groups; ALSO=runs/cv/X,...: does X get right what every run of RUNS gets wrong]
	$(if $(RUNS),,$(error cv-errors needs RUNS=runs/cv/NAME[,runs/cv/NAME2,...]))
	$(RUN) python -m lightning_app.training.errors $(subst $(comma), ,$(RUNS)) --data $(DATA) --top $(or $(TOP),20) $(if $(SHEET),--sheet $(SHEET)) $(if $(CUES),--cues) $(foreach r,$(subst $(comma), ,$(ALSO)),--also $(r))

## ---- recipe sweep ------------------------------------------------------------
.PHONY: sweep
SWEEP_NAME ?= $(if $(SWEEP_CV),recipe-cv,recipe)
SWEEP_SPACE ?= configs/sweeps/$(if $(SWEEP_CV),recipe-cv,recipe).yaml
SWEEP_TRIALS ?= 8
SWEEP_BUDGET ?= 900
sweep: data ## Optuna study of the recipe on DATA: offline, resumable (runs/sweeps/NAME/study.db; trials in benchmarks/sweeps/NAME.csv), median pruning on val/acc, trials projected past SWEEP_BUDGET s pruned; SWEEP_CV=0,1,2 scores trials by pooled out-of-fold accuracy on those folds of make cv's split instead [SWEEP_TRIALS=8 SWEEP_BUDGET=900 SWEEP_TIMEOUT=s SWEEP_LOCK=file SWEEP_ENQUEUE="k=v,k=v" SWEEP_SET="k=v ..." SWEEP_CV=0,1,2 SWEEP_SPACE=file]
	$(RUN) python -m lightning_app.training.sweep --name $(SWEEP_NAME) --space $(SWEEP_SPACE) --trials $(SWEEP_TRIALS) --budget $(SWEEP_BUDGET) $(if $(SWEEP_TIMEOUT),--timeout $(SWEEP_TIMEOUT)) $(if $(SWEEP_LOCK),--lock $(SWEEP_LOCK)) $(if $(SWEEP_ENQUEUE),--enqueue $(SWEEP_ENQUEUE)) \
		$(if $(SWEEP_CV),--cv $(SWEEP_CV) --cv-folds $(FOLDS)) $(foreach c,$(CONFIG),--config $(c)) --set data.data_dir=$(DATA) $(foreach s,$(SWEEP_SET),--set $(s))

## ---- quality -----------------------------------------------------------------
.PHONY: test test-unit lint format docs
test: env ## the whole test suite with coverage (what CI runs)
	$(RUN) pytest

test-unit: env ## the unit layer: every test not marked slow (no JVM, no browser, no coverage gate; ci.yml's OS x Python matrix)
	$(RUN) pytest -m "not slow" --no-cov

lint: env ## ruff (lint + format check) and mypy
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

docs: env ## the documentation site (docs/ + README sections + API reference from docstrings), strict, into .cache/site
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs build --strict --quiet -f configs/mkdocs.yml
	@echo "site: .cache/site/index.html"

format: env ## apply ruff formatting and safe fixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

## ---- benchmarks --------------------------------------------------------------
.PHONY: bench-train bench-decode bench-backends bench-storm bench-start
STORM_RUNTIME ?= both
bench-storm: env ## 8 concurrent 49 Mpx / 16.8 Mpx 16-bit PNGs against model_store/brain_mri.mar, TorchServe and LitServe (STORM_RUNTIME=): statuses, times, peak RSS per process
	$(RUN) python -m benchmarks.bench_storm --mar model_store/brain_mri.mar --runtime $(STORM_RUNTIME)

MAR ?= model_store/brain_mri.mar
bench-start: env ## LitServe start-to-ready, CPU seconds to ready and worker RSS on MAR (an ONNX .mar), torch unimportable vs installed, 3 starts each (~1 min)
	$(RUN) python -m benchmarks.bench_start --mar $(MAR)

bench-backends: data ## eager fp32 / torch.compile / bf16 / ONNX fp32 / ONNX int8: img/s at batch 1 and 8, load time, parity [CKPT=]
	$(RUN) python -m benchmarks.bench_backends $(if $(CKPT),--ckpt "$(CKPT)") --data $(DATA)

bench-decode: data ## decode + resize ms (p50/p95) over the real Br35H size mix: full decode vs reduced early
	$(RUN) python -m benchmarks.bench_decode --data $(DATA)

bench-train: data ## CONFIG on the leak-free split: acc/AUROC/sensitivity/ECE with CIs, wall, RSS [SEEDS="42 43 44"]; Lightning vs plain loop, fp32 vs bf16
	$(RUN) python -m benchmarks.bench_train --config $(CONFIG) --data $(DATA) $(if $(SEEDS),--seeds $(SEEDS))

.PHONY: profile
PROFILE_STEPS ?= 20
profile: data ## PyTorch profiler over PROFILE_STEPS (20) training steps of CONFIG and over the handler's batch path on DATA: chrome traces in runs/profile/, top-ops tables in docs/benchmarks.md [MAR=<.mar>: serve that model]
	$(RUN) python -m benchmarks.bench_profile $(foreach c,$(CONFIG),--config $(c)) --data $(DATA) --steps $(PROFILE_STEPS) $(if $(MAR),--mar "$(MAR)")

.PHONY: bench-reliability bench-fuzz
bench-reliability: env ## per runtime on model_store/brain_mri.mar: 20-user soak, 200-user overload (users sending again at once, and users waiting Retry-After), worker kill, slow clients [SOAK=1800 WINDOW=300 seconds; CHECKS="kill" RUNTIMES="litserve": a subset, own doc section]
	$(RUN) python -m benchmarks.bench_reliability --mar $(or $(MAR),model_store/brain_mri.mar) --duration $(or $(SOAK),1800) --window $(or $(WINDOW),300) $(if $(CHECKS),--checks $(CHECKS)) $(if $(RUNTIMES),--runtimes $(RUNTIMES))

bench-fuzz: env ## atheris over transforms.decode and the serving core with mutated real scans: executions, crashes [RUNS=100000]
	$(RUN) python -m benchmarks.bench_fuzz --mar $(or $(MAR),model_store/brain_mri.mar) --runs $(or $(RUNS),100000)

.PHONY: bench-drift bench-predlog
bench-drift: env ## drift report's false-alarm rate and power per shift and window size (REFERENCE .mar, DATA test split)
	$(RUN) python -m benchmarks.bench_drift --mar $(REFERENCE) --data $(DATA)

bench-predlog: env ## prediction-log cost: handler throughput with the log on vs off, side by side [SERVER=1: + real TorchServe]
	$(RUN) python -m benchmarks.bench_predlog --mar $(REFERENCE) --data $(DATA) $(if $(SERVER),--server)

## ---- cloud -------------------------------------------------------------------
.PHONY: vertex-train docker-lint precommit images image-test deploy-model
SPEC ?= configs/vertex/single.yaml
vertex-train: check-config env ## Vertex AI job for CONFIG [SPEC=configs/vertex/ddp.yaml REPLICAS=N] [DRY_RUN=1: print it]
	DRY_RUN=$(DRY_RUN) $(RUN) python -m lightning_app.cloud.vertex --config $(CONFIG) --spec $(SPEC) $(if $(REPLICAS),--replicas $(REPLICAS))

docker-lint: env ## hadolint on dockerfiles/*.dockerfile
	$(RUN) hadolint dockerfiles/train.dockerfile dockerfiles/serve.dockerfile dockerfiles/serve-lite.dockerfile dockerfiles/ui.dockerfile

images: env ## build the train, serve, serve-lite (LitServe, no torch) and ui images here with buildah (dockerfiles/local/build.sh; the serve images hold model_store/brain_mri.mar, else a smoke model)
	UV="$(UV)" dockerfiles/local/build.sh $(IMAGES)

image-test: env ## run the images make images built: serve and serve-lite on PORT, ui against serve, train's smoke fit into AIP_MODEL_DIR
	$(RUN) python dockerfiles/local/image_test.py

deploy-model: env ## [ALIAS=production|staging | VERSION=vN]: the registry version's archive (sha256-checked), then Cloud Build deploys exactly it; the UI names it [DRY_RUN=1: print; BUCKET=...]
	@test -z "$(MAR_URI)" || { echo "error: deploys read the model registry only: make register, make promote, then make deploy-model ALIAS=production (MAR_URI is no longer read)" >&2; exit 2; }
	$(RUN) python -m lightning_app.cloud.deploy_model $(if $(ALIAS),--alias "$(ALIAS)") $(if $(VERSION),--version "$(VERSION)") $(if $(DRY_RUN),--dry-run)

## registry: gs://$(BUCKET)/registry/brain_mri (docs/deploy.md, "The model registry")
.PHONY: register promote rollout
register: env ## a new registry version from RUN_DIR (default: newest under runs/ensemble) + model_store/brain_mri.mar; alias candidate; W&B model artifact [BUCKET=...]
	$(RUN) python -m lightning_app.cloud.register $(if $(RUN_DIR),--run "$(RUN_DIR)") $(if $(MAR),--mar "$(MAR)")

promote: env ## VERSION=vN ALIAS=staging|production: parity, quality floor, OOD, golden-set gates, then the alias moves atomically [BUCKET=...]
	@test -n "$(VERSION)" -a -n "$(ALIAS)" || { echo "error: usage: make promote VERSION=vN ALIAS=staging|production" >&2; exit 2; }
	$(RUN) python -m lightning_app.cloud.promote --version "$(VERSION)" --alias "$(ALIAS)"

rollout: env ## VERSION=vN: Cloud Run canary (no-traffic tagged revision, probes, 10/50/100 %, rollback on failure) [DRY_RUN=1: print gcloud, probe locally; PROBE_URL=]
	@test -n "$(VERSION)" || { echo "error: usage: make rollout VERSION=vN [DRY_RUN=1]" >&2; exit 2; }
	$(RUN) python -m lightning_app.cloud.rollout --version "$(VERSION)" $(if $(DRY_RUN),--dry-run) $(if $(PROBE_URL),--probe-url "$(PROBE_URL)")

precommit: env ## every pre-commit hook on all files (ruff, mypy, hadolint, schemas, whitespace, YAML)
	$(RUN) pre-commit run --all-files --show-diff-on-failure

## ---- serving -----------------------------------------------------------------
.PHONY: mar serve loadtest bench-serve bench-serve-cpu bench-ood bench-explain bench-localise bench-shortcut bench-probe bench-queues
SERVE_PORT ?= $(or $(PORT),8080)
USERS ?= 20
DURATION ?= 60s
mar: env ## CKPT (default: newest best-*.ckpt under runs/) -> model_store/brain_mri.mar, export steps on the checkpoint's own data [DATA=<root>; PRECISION=int8 (default)|onnx-fp32|fp32; int8 must pass the parity gate; CASCADE=C CASCADE_MARGIN=M: an ensemble served as a cascade, through its gate; CASCADE_FALLBACK=1: the whole ensemble where the gate refuses]
	$(RUN) python -m lightning_app.export $(if $(CKPT),--ckpt "$(CKPT)") --runs runs --out model_store $(if $(filter-out file,$(origin DATA)),$(if $(wildcard $(DATA)/split.csv),--data $(DATA))) $(if $(PRECISION),--precision $(PRECISION)) $(CASCADE_ARGS)

RUNTIME ?= torchserve
serve: env ## TorchServe (or RUNTIME=litserve) in the foreground on 127.0.0.1:$PORT (8080) with model_store/brain_mri.mar
	SERVE_RUNTIME=$(RUNTIME) PORT=$(SERVE_PORT) $(RUN) python -m serve

loadtest: env ## locust headless, USERS (20) for DURATION (60s), against the running server: reports/loadtest_*.csv
	@mkdir -p reports
	$(RUN) locust -f serve/locustfile.py --headless -u $(USERS) -r $(USERS) -t $(DURATION) \
		--host http://127.0.0.1:$(SERVE_PORT) --csv reports/loadtest --only-summary

bench-serve: data ## TorchServe and LitServe on the .mar (int8) vs the seed's FastAPI design on real test images, 20 users x 60 s each (~4 min) [SWEEP=1: + workers/batching sweep; PAIRS=3: TorchServe/LitServe 3 times, alternating; CASCADE=C CASCADE_MARGIN=M as make mar]
	$(RUN) python -m benchmarks.bench_serve --data $(DATA) $(if $(CKPT),--ckpt "$(CKPT)") $(if $(PRECISION),--precision $(PRECISION)) $(if $(SWEEP),--sweep) $(if $(PAIRS),--pairs $(PAIRS)) $(CASCADE_ARGS)

bench-serve-cpu: env ## handler CPU ms per request in-process on the .mar (MAR, default model_store/brain_mri.mar), numpy's BLAS on one thread (as served) vs its default; no load test
	$(RUN) python -m benchmarks.bench_predlog --cpu --rounds 5 --mar $(or $(MAR),model_store/brain_mri.mar) --data $(DATA)

## ---- monitoring ------------------------------------------------------------------
.PHONY: drift monitoring-deploy
REFERENCE ?= model_store/brain_mri.mar
DRIFT_OUT ?= reports/drift
drift: env ## LOGS=<jsonl|folder|gs://...>: drift report vs the profile of registry ALIAS (production) or VERSION=vN in DRIFT_OUT; exit 1 on drift [BUCKET=...; REFERENCE=<local .mar>: offline]
	@test -n "$(LOGS)" || { echo "error: usage: make drift LOGS=<prediction log file, folder or gs://...> [ALIAS=production | VERSION=vN | REFERENCE=<local .mar>]" >&2; exit 2; }
	$(RUN) python -m lightning_app.monitor drift --logs $(LOGS) $(if $(filter command line,$(origin REFERENCE)),--reference "$(REFERENCE)") $(if $(ALIAS),--alias "$(ALIAS)") $(if $(VERSION),--version "$(VERSION)") --out $(DRIFT_OUT) $(DRIFT_ARGS)

monitoring-deploy: env ## log-based metrics, alert policies, drift job + schedule on GCP [DRY_RUN=1: print the gcloud commands]
	DRY_RUN=$(DRY_RUN) $(RUN) python -m lightning_app.cloud.deploy_monitoring

bench-ood: env ## OOD guard: flagged rates on held-out MRIs, corrupted MRIs and non-MRI images from PyPI packages [CKPT="a.ckpt b.ckpt": several print the guard's spread over models]
	$(RUN) python -m benchmarks.bench_ood $(foreach c,$(CKPT),--ckpt $(c)) --data $(DATA)

bench-queues: env ## LitServe's Manager queues against multiprocessing.Queue: round-trip cost, and what a killed consumer does to each (docs/benchmarks.md)
	$(RUN) python -m benchmarks.bench_queues

bench-localise: data ## heatmap mass inside the head vs the head's area on the test split's tumour scans, per CKPT ("a.ckpt b.ckpt") and heatmap METHOD (default: all) [CV_FOLD=K: that fold's out-of-fold scans; LAYER="layer2 layer3": LayerCAM's layers]
	@test -n "$(CKPT)" || { echo "error: usage: make bench-localise CKPT=\"runs/.../best-*.ckpt [...]\"" >&2; exit 2; }
	$(RUN) python -m benchmarks.bench_localise $(foreach c,$(CKPT),--ckpt $(c)) $(foreach m,$(METHOD),--method $(m)) --data $(DATA) \
		$(if $(CV_FOLD),--cv-fold $(CV_FOLD)) $(foreach l,$(LAYER),--layer $(l))

bench-probe: data ## what frozen features know: a linear probe fitted on CV fold CV_FOLD's inner training scans, scored on its held-out scans, for the untrained network, each PRETRAINED (runs/selfsup/*.pt) and each CKPT of that fold [SIZE="64 128"]
	@test -n "$(CV_FOLD)" || { echo "error: usage: make bench-probe CV_FOLD=K [PRETRAINED=runs/selfsup/x.pt] [CKPT=...best-*.ckpt] [SIZE=\"64 128\"]" >&2; exit 2; }
	$(RUN) python -m benchmarks.bench_probe --cv-fold $(CV_FOLD) --data $(DATA) $(foreach p,$(PRETRAINED),--pretrained $(p)) $(foreach c,$(CKPT),--ckpt $(c)) $(foreach s,$(SIZE),--size $(s))

bench-shortcut: data ## what answers owe to the background: accuracy and recall per class with the area outside the head as is, black, or random grey, per CKPT ("a.ckpt b.ckpt") on the test split [CV_FOLD=K: that fold's out-of-fold scans; PROBE=framing: zoomed out/in and darker/brighter by 10 % instead]
	@test -n "$(CKPT)" || { echo "error: usage: make bench-shortcut CKPT=\"runs/.../best-*.ckpt [...]\"" >&2; exit 2; }
	$(RUN) python -m benchmarks.bench_shortcut $(foreach c,$(CKPT),--ckpt $(c)) --data $(DATA) $(if $(CV_FOLD),--cv-fold $(CV_FOLD)) $(if $(PROBE),--probe $(PROBE))

bench-explain: env ## heatmap hot spots inside the head, /explanations vs /predictions latency, OOD cost on RPS [CKPT=; HEATMAP=occlusion: the server's SERVE_HEATMAP]
	$(RUN) python -m benchmarks.bench_explain $(if $(CKPT),--ckpt "$(CKPT)") --data $(DATA) $(if $(HEATMAP),--heatmap $(HEATMAP))

## ---- demo ----------------------------------------------------------------------
.PHONY: ui demo
UI_PORT ?= 7860
DEMO_PORT ?= 8080
ui: env ## the Gradio page only, on 127.0.0.1:$UI_PORT (7860), against INFERENCE_URL (http://127.0.0.1:8080) [REGISTRY=gs://.../registry/brain_mri REGISTRY_ALIAS=production: name the registry version served]
	UI_PORT=$(UI_PORT) $(RUN) python -m lightning_app.ui

demo: data ## data, the served default (make fit-ensemble, ~17 min; or reuse its newest checkpoint in runs/ensemble/), .mar, then TorchServe + the page
	@if ls runs/ensemble/version_*/checkpoints/best-ensemble.ckpt >/dev/null 2>&1; then \
		echo "demo: reusing the newest assembled ensemble under runs/ensemble/"; \
	else $(MAKE) --no-print-directory fit-ensemble CONFIG=configs/default.yaml; fi
	@ckpt="$$(ls -t runs/ensemble/version_*/checkpoints/best-ensemble.ckpt | head -1)"; \
	$(MAKE) --no-print-directory mar CKPT="$$ckpt" CASCADE=$(ENSEMBLE_CASCADE) CASCADE_MARGIN=$(ENSEMBLE_CASCADE_MARGIN) CASCADE_FALLBACK=1
	$(RUN) python -m lightning_app.ui.demo --mar model_store/brain_mri.mar --inference-port $(DEMO_PORT) --ui-port $(UI_PORT)

.PHONY: clean
clean: ## remove runs, caches and build outputs (keeps data/ and .venv)
	rm -rf runs .cache model_store reports .pytest_cache .mypy_cache .ruff_cache .coverage coverage.xml
