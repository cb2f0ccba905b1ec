# make test  : set up everything (Debian packages, .venv) and run the test suite
# make demo  : two-node failover demo in network namespaces on this machine
# Both are idempotent: a second run reuses the virtualenv and installs nothing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-faults test-model demo bench lint host-deps clean screenshots

host-deps:
	@sh tools/host-deps.sh

$(STAMP): setup.py
	@sh tools/host-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP) host-deps
	$(BIN)/ruff check pyrhfos pyrhfos_lab tests bench
	$(BIN)/mypy pyrhfos pyrhfos_lab bench
	$(BIN)/python -m pytest -q tests

# The fault-injection and hostile-input tests alone (they are part of `make test` too).
test-faults: $(STAMP) host-deps
	$(BIN)/python -m pytest -q tests/lab/test_faults_lab.py tests/lab/test_auth_lab.py tests/daemon/test_hostile_input.py

# The schedule search of tests/sim at length (make test runs 40 schedules per timing): some minutes.
test-model: $(STAMP)
	PYRHFOS_SEARCH=$${PYRHFOS_SEARCH:-1000} $(BIN)/python -m pytest -q tests/sim/test_search.py

demo: $(STAMP) host-deps
	$(BIN)/python -m pyrhfos_lab.demo

# Failover outage and idle cost against keepalived (Debian package), rewrites bench/RESULTS.md.
bench: $(STAMP) host-deps
	command -v keepalived >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y keepalived)
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet 'matplotlib>=3.6'
	$(BIN)/python bench/failover.py

# The browser tests, keeping their screenshots in docs/screenshots/ (shown in the README).
screenshots: $(STAMP) host-deps
	PYRHFOS_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/lab/test_web_browser.py

lint: $(STAMP)
	$(BIN)/ruff check pyrhfos pyrhfos_lab tests bench
	$(BIN)/mypy pyrhfos pyrhfos_lab bench

clean:
	rm -rf $(VENV) build *.egg-info
