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

.PHONY: demo test faults scale lint bench clean help study browser

help:
	@echo "make demo   generate the shapes world, train a tiny CLIP under DeepSpeed ZeRO-2 (2 CPU processes), export it"
	@echo "make test   run the test suite (and ruff)"
	@echo "make faults inject faults into real runs (kill -9, damaged checkpoints, a full disk, stalled ranks; ~5 min, root; CI runs it after make test)"
	@echo "make scale  the hot loop's collective/sync budget and launch/slurm.sh under a fake srun (~6 min; CI runs it)"
	@echo "make bench  run the benchmarks in benchmarks/"
	@echo "make study STUDY=main   run (or resume) configs/studies/STUDY.yaml after make demo"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job on the built-in shapes world: generate it (once), train the tiny CLIP with 2 processes
# under DeepSpeed ZeRO-2 on CPU (zero-shot evaluation during training), export it to runs/demo/export,
# then score it on the shapes world's compositional probes. runs/demo is rewritten.
demo: $(STAMP)
	$(BIN)/vlp-data shapes --out $(DATA)
	rm -rf runs/demo
	$(BIN)/accelerate launch --config_file launch/accelerate/cpu_deepspeed_zero2.yaml \
		-m vlp.train --config configs/demo.yaml data.shapes_world=$(DATA) \
		"eval.zeroshot=[$(DATA)/zeroshot:test, $(DATA)/zeroshot:heldout]"
	@echo
	$(BIN)/vlp-eval compositional --model local-dir:runs/demo/export --benchmark shapes \
		--data $(DATA)/compositional --out runs/demo/compositional_shapes.json
	$(BIN)/vlp-eval report demo=runs/demo demo=runs/demo/compositional_shapes.json --out runs/demo/report.html

# A seeded study (configs/studies/$(STUDY).yaml) on the demo's world and export: resumable, one cell
# at a time; the second drawing of the world's probes is generated first (once).
STUDY ?= main
study: $(STAMP)
	$(BIN)/vlp-data shapes-probes --out data/shapes_alt --drawing alt
	$(BIN)/vlp-study --config configs/studies/$(STUDY).yaml

# tests/test_report.py loads the evaluation report in a real headless browser: Debian's Chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		echo "installing Chromium (Debian's package) for the report's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
			>/dev/null || { echo "could not install chromium: install it (apt-get install chromium) and rerun"; exit 1; }; }

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not faults and not scale" tests

# Slower multi-process checks of issue 23 (docs/launching.md "Launching at scale"): the per-step collective and
# host-sync budget of the hot loop (tests/test_hot_loop.py) and launch/slurm.sh through preemption and
# requeue under a fake srun. CI runs them after make test.
scale: $(STAMP)
	$(BIN)/python -m pytest -q -m scale tests

# Runs with injected faults (docs/launching.md "Faults and recovery"); the full-disk test mounts a tmpfs (root).
faults: $(STAMP)
	$(BIN)/python -m pytest -q -m faults tests/test_faults.py

bench: $(STAMP)
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/loader.py --corpus shapes
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/objectives.py
	$(BIN)/python benchmarks/eval.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/kmeans_memory.py
	$(BIN)/python benchmarks/comm_bytes.py
	$(BIN)/python benchmarks/resume_seek.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
