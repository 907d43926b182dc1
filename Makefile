# clipbot — make install | test | lint | run | demo | models | models-real | bench
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.clipbot-installed
TORCH := torch==2.13.0
TAMING := taming-transformers-rom1504==0.0.6

.PHONY: install test lint run worker demo models
.DEFAULT_GOAL := test

install: $(STAMP)

# Re-run only when the dependencies change (pyproject.toml) or the venv is new.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned: a CUDA build where a CUDA GPU answers (nvidia-smi), else the CPU build
	@# (a local CPU wheel configured for pip is taken as is; the CUDA build is ~5 GB)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "CUDA GPU found: installing the CUDA build of $(TORCH)"; \
		if ! $(PY) -c 'import torch,sys; sys.exit(torch.version.cuda is None)' 2>/dev/null; then \
			PIP_FIND_LINKS= $(PIP) install --force-reinstall "$(TORCH)"; fi; \
	else \
		echo "no CUDA GPU: installing the CPU build of $(TORCH)"; \
		$(PIP) install "$(TORCH)"; \
	fi
	$(PIP) install -e '.[worker,dev]'
	@# taming's own requirements pin ancient packages; worker/vqgan_compat.py stands in for them
	$(PIP) install --no-deps $(TAMING)
	@touch $(STAMP)

lint: install
	$(PY) -m ruff check .

test: install
	$(PY) -m pytest tests/ -q

run: install
	$(PY) -m bot

worker: install
	$(PY) -m worker

# Retrain the shipped models from scratch into models/ (wall-clock budget in minutes, both models)
MODELS_MINUTES ?= 40
models: install
	$(PY) -m worker.training all --out models --minutes $(MODELS_MINUTES)

# The recommended real pair (CLIP ViT-B/32 + taming's ImageNet f16 16384 VQGAN, ~1.6 GB) into
# $(MODELS_DIR); then CLIP_MODEL=clip-vit-base-patch32 VQGAN_MODEL=vqgan_imagenet_f16_16384
MODELS_DIR ?= models
.PHONY: models-real
models-real: install
	$(PY) -m worker models fetch --recommended --dir $(MODELS_DIR)

# /classify, /find and /imagine through embedded Redis + a worker process -> demo-out/
demo: install
	$(PY) -m worker.demo --out demo-out

# Benchmarks -> bench/results.json + a table. QUICK=1: small sizes, a few minutes. BENCH_ONLY=imagine,find: a subset.
.PHONY: bench
bench: install
	$(PY) -m bench $(if $(filter 1 yes true,$(QUICK)),--quick) $(if $(BENCH_ONLY),--only $(BENCH_ONLY)) $(if $(BENCH_THREADS),--threads $(BENCH_THREADS))
