# Two commands do all the set-up on a fresh machine with nothing but Python 3.11:
#   make demo   create .venv, install, and run the main job on the bundled sample
#   make test   create .venv if needed, and run the whole test suite (.ci/run calls this)
#   make lint   ruff (lint and format) and mypy (the base install's modules), as .ci/run does

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_RUN := runs/demo

.PHONY: demo test lint install clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-mediapipe.txt
	@command -v $(PYTHON) >/dev/null || { echo "edgelesion needs Python 3.11 ($(PYTHON) not found): install it or run make PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,test]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-mediapipe.txt
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The demo writes only under runs/demo*, and export/demo, which it replaces on every run (--force).
demo: $(STAMP)
	@echo "== edgelesion demo: a SMOKE RUN on 93 sample images. Its accuracy means nothing. =="
	$(BIN)/edgelesion audit --data demo/sample --out $(DEMO_RUN)-audit --force
	$(BIN)/edgelesion train --data demo/sample --out $(DEMO_RUN) --recipe seed-dropout-augmentor --epochs 8 --folds 3 --min-support 3 --force
	$(BIN)/edgelesion evaluate $(DEMO_RUN)
	@echo "== Export: a smoke model's near-uniform probabilities make the int8 top-1 checks noise, so the demo"
	@echo "== keeps any artifact that misses its tolerance (--keep-failed) and marks it in bundle.json. =="
	$(BIN)/edgelesion export $(DEMO_RUN) --out export/demo --keep-failed --force
	$(BIN)/edgelesion predict export/demo demo/sample/melanoma --artifact int8.tflite
	$(BIN)/edgelesion benchmark export/demo --out $(DEMO_RUN)-benchmark --runs 50 --force
	@echo "== Done. Outputs in $(DEMO_RUN)/. This was a smoke run on 93 images: its numbers mean nothing. =="
	@echo "== For a real model, train on the full dataset: see README.md. =="

clean-demo:
	rm -rf $(DEMO_RUN) $(DEMO_RUN)-audit $(DEMO_RUN)-benchmark export/demo
