# make test  : set up everything (Debian packages, .venv) and run the test suite
# make demo  : two-node failover demo in network namespaces on this machine
# Both are idempotent: a second run reuses the virtualenv and installs nothing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint host-deps clean

host-deps:
	@sh tools/host-deps.sh

$(STAMP): setup.py
	@sh tools/host-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP) host-deps
	$(BIN)/ruff check pyrhfos tests bench
	$(BIN)/python -m pytest -q tests

demo: $(STAMP) host-deps
	$(BIN)/python -m pyrhfos.demo

lint: $(STAMP)
	$(BIN)/ruff check pyrhfos tests bench

clean:
	rm -rf $(VENV) build *.egg-info
