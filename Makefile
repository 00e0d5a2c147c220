# tinker_nb developer targets. `make demo` and `make test` work as the first command on a fresh clone.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev demo lint test test-fast bench bench-full bench-gpu model clean

dev: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# CPU torch first (from local disk here), so the project's open range is already met.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev]"
	# Debian's chromium drives the real-browser test (playwright's own browser download does not work here).
	@if ! test -x /usr/bin/chromium; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "note: install Debian's chromium (sudo apt-get install chromium) for the browser test"; fi; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tinker_nb.demo

# JupyterLab from the venv (anywidget and the kernel live there, so the widgets load), on the notebooks.
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks

# ruff (style, imports, likely bugs) and mypy (strict on the trust core); config in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check tinker_nb tests benchmarks scripts
	$(BIN)/mypy

test: $(STAMP) lint
	TINKER_NB_FAST=1 $(BIN)/python -m pytest tests --nbmake notebooks

test-fast: $(STAMP)
	TINKER_NB_FAST=1 $(BIN)/python -m pytest tests -m "not browser"

bench: $(STAMP)
	$(BIN)/python -m benchmarks --quick

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks --full

# DP vs non-DP vs opacus on a ~0.7 B Llama config in bf16 (CUDA); `--smoke` runs the harness on CPU.
bench-gpu: $(STAMP)
	$(BIN)/python -m benchmarks.gpu

.PHONY: serve
# The Training API on 127.0.0.1:8000 over the default workspace (docs/SERVER.md); keys: tinker-nb apikey create.
serve: $(STAMP)
	$(BIN)/tinker-nb serve --workspace .tinker_nb

model: $(STAMP)
	$(BIN)/python scripts/make_tiny_llama.py

clean:
	rm -rf $(VENV) .tinker_nb reports/bench/*.json .pytest_cache
