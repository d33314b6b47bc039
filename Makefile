# Two commands for a fresh machine (Python 3.11+, Java 17, Debian's apt):
#   make run    set up everything, start the local Kafka + SMTP stack, run the worker
#   make test   set up everything, lint, run the whole test suite (starts its own stack)
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint stack-down

$(INSTALLED): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[test,bench]'
	touch $@

run: $(INSTALLED)
	$(BIN)/cartwatch stack up
	$(BIN)/cartwatch worker --loglevel info

test: lint
	$(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .

stack-down: $(INSTALLED)
	$(BIN)/cartwatch stack down
