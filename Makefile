# Quick start: `make demo` and `make test`. Both work on a fresh Debian machine with only
# Python 3.11+ and make: uv is installed with pip when missing, then the locked environment
# is synced.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(HOME)/.local/bin/uv
endif
RUN := $(UV) run --frozen

.PHONY: help setup demo test test-fast lint typecheck requirements bench services

help:
	@echo "make demo          set up and run the main job on the sample photos of scikit-image/scikit-learn"
	@echo "make test          set up and run the tests (needs Redis and PostgreSQL; starts them if it can)"
	@echo "make requirements  export requirements-*.txt from uv.lock"
	@echo "make bench         run the benchmarks in bench/"
	@echo "make lint          ruff + mypy"

$(HOME)/.local/bin/uv:
	python3 -m pip install --user --quiet uv 2>/dev/null \
	  || python3 -m pip install --user --quiet --break-system-packages uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --all-extras
	@touch $@

setup: .venv/.synced

demo: setup
	$(RUN) modomo process --pipeline auto $$($(RUN) python scripts/demo_sources.py)

services:
	@bash scripts/services.sh

test: setup
	@bash scripts/services.sh || echo "services not started: their tests will be skipped (CI=true fails them)"
	$(RUN) pytest

lint: setup
	$(RUN) ruff check src tests bench scripts celery_app.py
	$(RUN) ruff format --check src tests bench scripts celery_app.py
	$(RUN) mypy src

requirements: setup
	bash scripts/export-requirements.sh

bench: setup services
	$(RUN) python bench/colors.py
	$(RUN) python bench/queue_overhead.py
	$(RUN) python bench/ai_pipeline.py --size tiny --images 32
	$(RUN) python bench/api_load.py
	$(RUN) python bench/import.py
	$(RUN) python bench/dedup.py
	$(RUN) python bench/export.py
