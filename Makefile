# Two set-up commands (README): `make demo` and `make test`. Both create .venv if needed and are safe to rerun.
PYTHON ?= python3
VENV ?= .venv
# CPU build from local disk on the project's machines; GPU users: `make demo TORCH_SPEC='torch>=2.4'`.
TORCH_SPEC ?= torch==2.13.0
PIP := $(VENV)/bin/pip
DEMO_ARGS ?=

.PHONY: demo test results install dev clean-venv

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

# The README's Results section: the open-domain SQuAD systems (resumable sweep), then tables, plots and the README.
RESULTS_DIR ?= experiments/results
RESULTS_ARGS ?=
results: install
	WANDB_MODE=$${WANDB_MODE:-offline} $(VENV)/bin/rag-e2e sweep experiments/sweeps/squad_systems.yaml \
		output_dir=$(RESULTS_DIR) $(RESULTS_ARGS); \
	$(VENV)/bin/rag-e2e report $(RESULTS_DIR)/sweeps/squad_systems out=$(RESULTS_DIR) \
		title="Open-domain SQuAD v1.1 (CPU scale)" readme=README.md \
		order=squad_generator_only,squad_fixed_retriever,squad_rag_original,squad_rag_end2end

clean-venv:
	rm -rf $(VENV)
