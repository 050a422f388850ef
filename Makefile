# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
# torch first and pinned exactly: a looser pin pulls gigabytes of CUDA packages
TORCH  := torch==2.13.0
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
ISF    := $(VENV)/bin/isf

.PHONY: demo test bench install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(PY) pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[dev,local]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(ISF) pipeline run identity-qa
	@echo
	@echo "Output: training/data/identity-qa.jsonl (errors and manifest beside it)"
	@head -c 600 training/data/identity-qa.jsonl; echo " ..."

test: install-dev
	$(PY) -m pytest -q

bench: install-dev
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) training/data/*.jsonl training/data/*.json training/.cache
