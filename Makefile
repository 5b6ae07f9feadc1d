# Two commands do everything:  `make train` (set up, then the default training run) and `make test`
# (every test; `make test-fast` skips the subprocess-heavy ones marked slow: under a minute on 2 cores).
# Offline, point the harness at a local copy of its downloads first:
#   export GPT2_DATA_MIRROR=../shared/data
# Pass Hydra overrides to training with ARGS, e.g.  make train ARGS="experiment=shakespeare_char_cpu"

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned here, not in pyproject.toml: a CPU machine with the local 2.13.0 CPU wheel takes it
# in seconds, a CUDA machine gets PyPI's CUDA build of the same release.
TORCH  ?= torch==2.13.0
ARGS   ?=
PYTEST_ARGS ?=
# test processes (pytest-xdist): one per core by default; TEST_WORKERS=0 runs them in this process
TEST_WORKERS ?= auto

.PHONY: setup train test test-fast clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/.installed

train: setup
	$(BIN)/python train.py $(ARGS)

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
