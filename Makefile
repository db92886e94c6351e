# labelrec: `make demo` runs the whole pipeline on the built-in demo catalog, `make test` the tests.
# Both create .venv and install into it first. GPU users: make demo TORCH_SPEC="torch==2.13.0 --index-url ..."
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export DO_NOT_TRACK := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m labelrec.demo_run

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check labelrec tests benchmarks
	$(BIN)/ruff format --check labelrec tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format labelrec tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/quality.py --all

clean:
	rm -rf $(VENV) runs mlruns mlartifacts mlruns.db demo_data
