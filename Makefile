# medboost: `make demo` installs and runs the main job on its default; `make test` installs and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# MedMNIST files: $MEDBOOST_DATA when set; else the shared folder beside this checkout when there is one (this
# project's machines); else MEDBOOST_DATA stays unset and medboost uses medmnist's ~/.medmnist, where `make demo`
# downloads what it needs. Found from this Makefile's place, not from the folder make runs in.
HERE        := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
SHARED_DATA := $(abspath $(HERE)../shared/medmnist)
ifneq ($(wildcard $(SHARED_DATA)/.),)
export MEDBOOST_DATA ?= $(SHARED_DATA)
endif

.PHONY: setup demo test test-fp32 test-bf16 bench docs clean

# torch and torchvision first, pinned: on this kind of machine pip takes them from the local disk.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# The main job on its default: BreastMNIST, R-LLM booster, CPU preset (minutes on 2 cores). `download` only checks
# the MD5 of a file already there, and fetches it (550 kB) where it is not.
demo: setup
	$(BIN)/medboost download breast
	$(BIN)/medboost train breast --booster rllm --preset cpu
	@echo "next: . $(VENV)/bin/activate (puts medboost on PATH), then: medboost runs; medboost evaluate RUN_ID;"
	@echo "      medboost train breast --booster none --preset cpu (the baseline); medboost report --html"

# The suite with precision `auto` pinned to fp32, then its numerical core again with `auto` forced to bf16: what
# a CPU with bf16 instructions runs, on every CPU (one without them emulates bf16, slowly: hence a reduced set).
# Tests that compare numbers across processes or chunks pin their own precision.
BF16_TESTS := tests/test_hardware.py tests/test_booster.py tests/test_fidelity.py tests/test_llm_layer.py \
	tests/test_phi.py tests/test_pneumollm.py tests/test_engine.py tests/test_benchmarks.py \
	tests/test_distributed.py::test_one_step_on_two_shares_gives_the_whole_batchs_gradient

test: test-fp32 test-bf16

test-fp32: setup
	MEDBOOST_AUTO_PRECISION=fp32 $(BIN)/python -m pytest -n 2 --durations=15

test-bf16: setup
	MEDBOOST_AUTO_PRECISION=bf16 $(BIN)/python -m pytest -n 2 --durations=5 -m "not slow" $(BF16_TESTS)

# Speed and memory figures (printed, not asserted in unit tests): the paper's 2D shape and one-layer loading.
bench: setup
	$(BIN)/python benchmarks/paper_shape.py
	$(BIN)/python benchmarks/load_memory.py
	$(BIN)/python benchmarks/load_memory_stack.py
	$(BIN)/python benchmarks/bootstrap_auc.py

# The documentation site: installs the docs extra into the venv, then builds it into site/ with --strict (a broken
# link, a page missing from the navigation or a figure without its record fails the build).
docs: setup
	$(BIN)/pip install -q -e ".[docs]"
	$(BIN)/mkdocs build --strict

clean:
	rm -rf results .pytest_cache site
