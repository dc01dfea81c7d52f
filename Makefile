# The two commands of the README:
#   make run    installs sdweb in .venv and serves the demo page on port 8080
#               (PORT=...); Ctrl-C stops it and make exits 0
#   make test   installs the package (not editable) with its test tools, the
#               system tools the tests drive (systemd, curl, wrk, ss, haproxy,
#               prometheus),
#               unpacks systemd 254 into .cache/ and runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8080
BIN = $(VENV)/bin
SYSTEM_TOOLS = systemctl:systemd curl:curl wrk:wrk ss:iproute2 haproxy:haproxy promtool:prometheus prometheus:prometheus

SYSTEMD_254 = .cache/systemd-254

.PHONY: run test test-oldest venv system-tools systemd-254 lint bench mutate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

venv: $(BIN)/python

run: venv
	$(BIN)/python -m pip install --quiet .
	cd $(VENV) && exec bin/python $(abspath tools/foreground.py) \
	  bin/twistd -n --pidfile= sdweb --port $(PORT)

# apt-get only when something is missing and we may (root); otherwise the
# tests that need the tool say so (and fail under CI=true).
system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "warning: missing$$missing (install them for the full suite)"; \
	  fi; \
	fi

# systemd 254, unpacked (not installed) for the tests of what 252 cannot do;
# without it those tests skip (and fail under CI=true).
systemd-254:
	@sh tests/fetch_systemd254.sh $(SYSTEMD_254) || \
	  echo "warning: no systemd 254 in $(SYSTEMD_254): its tests will skip"

test: venv system-tools systemd-254
	rm -rf build
	$(BIN)/python -m pip install --quiet '.[test]'
	cd tests && $(abspath $(BIN))/python -m pytest -p no:cacheprovider --rootdir=.. -c ../pyproject.toml $(PYTEST_ARGS)

# The suite on the oldest Python that setup.cfg's python_requires claims
# (a pyenv-installed 3.9 if there is one, else python3.9 on PATH).
OLDEST_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.9*/bin/python3.9) python3.9)
test-oldest:
	$(MAKE) test PYTHON=$(OLDEST_PYTHON) VENV=.venv-oldest

lint: venv
	$(BIN)/python -m pip install --quiet '.[dev]'
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: venv system-tools
	$(BIN)/python -m pip install --quiet .
	$(BIN)/python bench/compare_web.py

# Mutation testing of the core modules (cosmic-ray, docs/mutation.md): each
# module against its own fast tests; prints the score per module and fails on
# a surviving mutant not explained in mutation/equivalent.txt.
# MUTATE="lifecycle stats" runs only those.
mutate: venv
	rm -rf build
	$(BIN)/python -m pip install --quiet '.[test,mutation]'
	$(BIN)/python mutation/run.py $(MUTATE)

clean:
	rm -rf $(VENV) .venv-oldest build *.egg-info .mutation
