# make test  : set up everything (Debian packages, .venv) and run the test suite
# make demo  : two-node failover demo in network namespaces on this machine
# Both are idempotent: a second run reuses the virtualenv and installs nothing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-faults test-model demo bench lint host-deps clean screenshots venv-nftables

host-deps:
	@sh tools/host-deps.sh

$(STAMP): setup.py
	@sh tools/host-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian's python3-nftables (libnftables' ctypes binding, pure Python) sits in the system Python's
# dist-packages; the venv's Python is another build, so that one package directory is symlinked into the
# venv's site-packages (not the whole of dist-packages on sys.path). Idempotent: an existing link stays.
NFT_PKG := /usr/lib/python3/dist-packages/nftables
venv-nftables: $(STAMP)
	@site=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	if [ -d $(NFT_PKG) ] && [ ! -e "$$site/nftables" ]; then ln -sfn $(NFT_PKG) "$$site/nftables"; fi

test: $(STAMP) host-deps venv-nftables
	$(BIN)/ruff check pyrhfos pyrhfos_lab tests bench
	$(BIN)/mypy pyrhfos pyrhfos_lab bench
	$(BIN)/python -m pytest -q tests

# The fault-injection and hostile-input tests alone (they are part of `make test` too).
test-faults: $(STAMP) host-deps
	$(BIN)/python -m pytest -q tests/lab/test_faults_lab.py tests/lab/test_auth_lab.py tests/daemon/test_hostile_input.py

# The schedule search of tests/sim at length (make test runs 40 schedules per timing): some minutes.
test-model: $(STAMP)
	PYRHFOS_SEARCH=$${PYRHFOS_SEARCH:-1000} $(BIN)/python -m pytest -q tests/sim/test_search.py

demo: $(STAMP) host-deps venv-nftables
	$(BIN)/python -m pyrhfos_lab.demo

# Failover outage and idle cost against keepalived (Debian package), rewrites bench/RESULTS.md.
bench: $(STAMP) host-deps venv-nftables
	command -v keepalived >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y keepalived)
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet 'matplotlib>=3.6'
	$(BIN)/python bench/failover.py

# The LVS director's benchmarks (bench/lvs_*.py, each under 3 min): ruleset load time, a dead real
# server out of rotation, director failover beside keepalived, requests through the director, wlc
# quality. Each rewrites its own block of bench/RESULTS.md's LVS section.
.PHONY: bench-lvs
bench-lvs: $(STAMP) host-deps venv-nftables
	command -v keepalived >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y keepalived)
	$(BIN)/python bench/lvs_load.py
	$(BIN)/python bench/lvs_dead.py
	$(BIN)/python bench/lvs_failover.py --faults linkdown
	$(BIN)/python bench/lvs_failover.py --faults kill9
	$(BIN)/python bench/lvs_failover.py --faults linkdown --modes direct
	$(BIN)/python bench/lvs_rps.py
	$(BIN)/python bench/lvs_wlc.py

# The browser tests, keeping their screenshots in docs/screenshots/ (shown in the README).
screenshots: $(STAMP) host-deps
	PYRHFOS_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/lab/test_web_browser.py tests/lab/test_web_browser_lvs.py

lint: $(STAMP) venv-nftables
	$(BIN)/ruff check pyrhfos pyrhfos_lab tests bench
	$(BIN)/mypy pyrhfos pyrhfos_lab bench

clean:
	rm -rf $(VENV) build *.egg-info
