# Quick start: `make demo` and `make test`. Both work on a fresh Debian machine with only
# Python 3.11+ and make: uv is installed with pip at the pinned version when missing (or at
# another version), then the locked environment is synced.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The one pin of the tooling a fresh machine installs; the Dockerfile copies the same uv
# (tests/test_packaging.py keeps the two equal). A uv found on PATH is not used: another
# version resolves and exports differently.
UV_VERSION := 0.13.8
UV := $(HOME)/.local/bin/uv
RUN := $(UV) run --frozen
export UV

.PHONY: tools help setup demo test test-fast lint typecheck requirements bench services compose-smoke

help:
	@echo "make demo          set up and run the main job on the sample photos of scikit-image/scikit-learn"
	@echo "make test          set up and run the tests (needs Redis and PostgreSQL; starts them if it can)"
	@echo "make requirements  export requirements-*.txt from uv.lock"
	@echo "make bench         run the benchmarks in bench/"
	@echo "make compose-smoke build the images, run the Compose stack and jobs on it (root, ~15 min)"
	@echo "make lint          ruff + mypy"

# uv, (re)installed whenever the one in ~/.local/bin is missing or not the pinned version.
tools:
	@if [[ "$$($(UV) --version 2>/dev/null | cut -d' ' -f2)" != "$(UV_VERSION)" ]]; then \
	  echo "installing uv $(UV_VERSION) into $(UV)"; \
	  python3 -m pip install --user --quiet --force-reinstall "uv==$(UV_VERSION)" 2>/dev/null \
	    || python3 -m pip install --user --quiet --force-reinstall --break-system-packages \
	         "uv==$(UV_VERSION)"; \
	fi

.venv/.synced: pyproject.toml uv.lock | tools
	$(UV) sync --locked --all-extras
	@touch $@

setup: tools .venv/.synced

demo: setup
	$(RUN) modomo process --pipeline auto $$($(RUN) python scripts/demo_sources.py)
	$(RUN) modomo export --format hf --out demo-dataset --sheet

services:
	@bash scripts/services.sh

test: setup
	@bash scripts/services.sh || echo "services not started: their tests will be skipped (CI=true fails them)"
	$(RUN) pytest

lint: setup
	$(RUN) ruff check src tests bench scripts tasks models celery_app.py main_refactored.py flowerconfig.py
	$(RUN) ruff format --check src tests bench scripts tasks models celery_app.py main_refactored.py flowerconfig.py
	$(RUN) mypy src

# Too slow for `make test` (image builds): RELIABILITY.md has its latest output.
compose-smoke: setup
	bash scripts/compose-smoke.sh

requirements: setup
	bash scripts/export-requirements.sh

bench: setup services
	$(RUN) python bench/colors.py
	$(RUN) python bench/queue_overhead.py
	$(RUN) python bench/ai_pipeline.py --size tiny --images 32
	$(RUN) python bench/ai_host.py
	$(RUN) python bench/api_load.py
	$(RUN) python bench/import.py
	$(RUN) python bench/dedup.py
	$(RUN) python bench/export.py
