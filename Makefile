# Two commands for a fresh machine (Python 3.11+, Java 17, Maven, Debian's apt):
#   make demo   set up everything, start the local stack, watch carts abandoned and reminded
#   make run    set up everything, start the local Kafka + SMTP stack, run the worker
#   make test   set up everything, lint (ruff, mypy, OpenAPI document up to date), run the whole test suite (starts its own stack)
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run demo test lint stack-down

$(INSTALLED): pyproject.toml devtools/pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt \
		--editable '.[test]' --editable './devtools[bench]'
	touch $@

# `make run` reminds through the local stack's mail server unless told otherwise.
run: export CARTWATCH_SMTP_PORT ?= 1025
run: export CARTWATCH_NOTIFIER_ENABLED ?= true
run: export CARTWATCH_LINK_SECRET_FILE ?= .cartwatch/link-secret
run: $(INSTALLED)
	@mkdir -p $(dir $(CARTWATCH_LINK_SECRET_FILE))
	@test -s $(CARTWATCH_LINK_SECRET_FILE) || (umask 077 && $(BIN)/python -c \
		"import secrets; print(secrets.token_hex(32))" > $(CARTWATCH_LINK_SECRET_FILE))
	$(BIN)/cartwatch stack up --reuse
	$(BIN)/cartwatch worker --loglevel info

# Short times and live shoppers: see README "See it work in five minutes".
demo: $(INSTALLED)
	$(BIN)/cartwatch demo

# The whole suite on the stack's default broker (Kafka 4.x), then the compatibility leg: the
# pipeline, notifier, operator and kill -9 tests again on Kafka 2.3 (ZooKeeper).
test: lint
	$(BIN)/python -m pytest
	CARTWATCH_STACK_KAFKA=2.3 $(BIN)/python -m pytest -m compat

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m streams.operator.openapi --check

stack-down: $(INSTALLED)
	$(BIN)/cartwatch stack down
