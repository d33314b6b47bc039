# Two commands for a fresh machine (Python 3.11+, Java 17, Maven, Debian's apt):
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

# `make run` reminds through the local stack's mail server unless told otherwise.
run: export CARTWATCH_SMTP_PORT ?= 1025
run: export CARTWATCH_NOTIFIER_ENABLED ?= true
run: export CARTWATCH_LINK_SECRET_FILE ?= .cartwatch/link-secret
run: $(INSTALLED)
	@mkdir -p $(dir $(CARTWATCH_LINK_SECRET_FILE))
	@test -s $(CARTWATCH_LINK_SECRET_FILE) || (umask 077 && $(BIN)/python -c \
		"import secrets; print(secrets.token_hex(32))" > $(CARTWATCH_LINK_SECRET_FILE))
	$(BIN)/cartwatch stack up
	$(BIN)/cartwatch worker --loglevel info

test: lint
	$(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .

stack-down: $(INSTALLED)
	$(BIN)/cartwatch stack down
