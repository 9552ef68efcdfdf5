# The two commands of the quickstart. Each installs what it needs, idempotently.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test setup lint typecheck pytest bench clean-containers

## make run: set everything up, check the machine, then run sandlab on its defaults: an offline
## front-end (built-in corpus, planning session) on TOPIC, then the loop. Network sources:
## make run SOURCES=semantic_scholar,arxiv,openalex
## The low-data digits setting (10% of the training split) is where ideas matter: see the README.
TOPIC ?= data augmentation for small digit datasets
SOURCES ?= none
TRAIN_FRACTION ?= 0.1
SEEDS ?= 5
run: setup
	$(BIN)/controller doctor
	$(BIN)/controller start --budget 5m --agent offline --task digits --topic "$(TOPIC)" --sources "$(SOURCES)" \
		--train-fraction $(TRAIN_FRACTION) --seeds $(SEEDS)

## make test: set everything up, then lint, type-check and run the whole suite (docker tests included).
test: setup lint typecheck pytest

setup:
	@scripts/bootstrap.sh

lint:
	$(BIN)/ruff check controller sandbox tests benchmarks scripts

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest -q

## make bench: the benchmarks (the host side of container_vs_host needs torch: the `local` extra).
bench: setup
	$(BIN)/python -m pip install --quiet -e '.[local]'
	$(BIN)/python benchmarks/sandbox_overhead.py
	$(BIN)/python benchmarks/container_vs_host.py
	$(BIN)/python benchmarks/matrix_throughput.py
	$(BIN)/python benchmarks/event_flood.py
	$(BIN)/python benchmarks/fork_start.py
	$(BIN)/python benchmarks/ray_overhead.py

clean-containers:
	$(BIN)/controller reap
