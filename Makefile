# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
# torch first and pinned exactly: a looser pin pulls gigabytes of CUDA packages
TORCH  := torch==2.13.0
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
ISF    := $(VENV)/bin/isf

.PHONY: demo test bench install install-dev chromium clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(PY) pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[dev,local,ray]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(ISF) pipeline run identity-qa
	@echo
	@echo "Output: training/data/identity-qa.jsonl (manifest beside it, failed records in training/data/errors/)"
	@head -c 600 training/data/identity-qa.jsonl; echo " ..."

test: install-dev chromium
	$(PY) -m pytest -q

# the HTML report is tested in a real headless browser: Debian's chromium, when missing
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (echo "installing chromium (Debian package) for the report test" && apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium could not be installed: the browser test will be skipped"

# peers measured beside the pipeline, each in a venv of its own (only `make bench` installs them;
# distilabel 1.5.3 imports requests without declaring it)
BENCH_CURATOR    := bench/.venv-curator
BENCH_DISTILABEL := bench/.venv-distilabel

$(BENCH_CURATOR)/.installed:
	$(PYTHON) -m venv $(BENCH_CURATOR)
	$(BENCH_CURATOR)/bin/pip install --quiet bespokelabs-curator==0.1.31
	touch $@

$(BENCH_DISTILABEL)/.installed:
	$(PYTHON) -m venv $(BENCH_DISTILABEL)
	$(BENCH_DISTILABEL)/bin/pip install --quiet 'distilabel[openai]==1.5.3' requests
	touch $@

bench: install-dev $(BENCH_CURATOR)/.installed $(BENCH_DISTILABEL)/.installed
	$(PY) bench/startup.py
	$(PY) bench/throughput.py
	$(PY) bench/batch_cost.py

clean:
	rm -rf $(VENV) training/data/*.jsonl training/data/*.json training/.cache
