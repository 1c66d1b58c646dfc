# Two set-up commands (README): `make demo` and `make test`. Both create .venv if needed and are safe to rerun.
PYTHON ?= python3
VENV ?= .venv
# CPU build from local disk on the project's machines; GPU users: `make demo TORCH_SPEC='torch>=2.4'`.
TORCH_SPEC ?= torch==2.13.0
PIP := $(VENV)/bin/pip
DEMO_ARGS ?=

.PHONY: demo test install dev clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev

demo: install
	WANDB_MODE=$${WANDB_MODE:-offline} $(VENV)/bin/rag-e2e train experiment=synthetic_demo $(DEMO_ARGS)

test: dev
	$(VENV)/bin/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
