# The single source of truth for commands: `make lab`, `make test`, `make lint`, `make demo`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.PHONY: lab test lint demo venv clean bench browser-test strip

venv: $(STAMP)

# torch first (a CPU wheel; installing it first keeps pip from pulling a CUDA build), then the rest.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH_PIN)"
	$(BIN)/python -m pip install "$(TORCH_PIN)" -e ".[notebook,dev,distributed,hf,onnx]"
	touch $(STAMP)

# JupyterLab refuses to start as root without --allow-root (containers, Binder-like boxes).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
LAB_ARGS ?=

lab: $(STAMP)
	$(BIN)/jupyter lab --ip=127.0.0.1 --ServerApp.root_dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check nasviz tests benchmarks
	$(BIN)/ruff format --check nasviz tests benchmarks
	$(BIN)/mypy
	$(BIN)/nbstripout --verify notebooks/*.ipynb

test: lint
	$(BIN)/python -m pytest -q tests
	$(BIN)/python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

demo: $(STAMP)
	$(BIN)/python -m nasviz demo

bench: $(STAMP)
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

browser-test: $(STAMP)
	command -v chromium >/dev/null 2>&1 || bash tools/install_browser.sh
	NASVIZ_BROWSER_TESTS=1 $(BIN)/python -m pytest -q -m browser tests

strip: $(STAMP)
	$(BIN)/nbstripout notebooks/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
