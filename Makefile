# Two commands do all the set-up on a fresh machine:  make demo  and  make test.
# Both create .venv when it is absent and (re)install the project when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned to the release this project is tested with; override for another build, e.g.
#   make test TORCH="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu"
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
DATA   ?= data/shapes

.PHONY: demo test lint bench clean help

help:
	@echo "make demo   generate the shapes world and stream batches from it (the whole pipeline so far)"
	@echo "make test   run the test suite (and ruff)"
	@echo "make bench  run the benchmarks in benchmarks/"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vlp-data shapes --out $(DATA)
	$(BIN)/vlp-data stats $(DATA)/train
	$(BIN)/vlp-data peek $(DATA)/train --batches 5 --batch-size 64 --negatives 4 --workers 2
	@echo
	@echo "demo: shapes world in $(DATA) (train shards, zeroshot/, compositional/); batches streamed above."

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python benchmarks/loader.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
