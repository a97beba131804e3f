# make demo / make test each bootstrap .venv on a fresh machine (python3 >= 3.10 and network to PyPI).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgecls-installed

.PHONY: demo test test-fast venv system-deps clean-venv

venv: $(STAMP)

# Re-installs when pyproject.toml changes; -e so the checkout is what runs.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Debian packages the tests start for real (tools/system-packages.txt); a no-op when present.
system-deps:
	bash tools/install_system_packages.sh

test: $(STAMP) system-deps
	$(PY) -m pytest -q -ra

# Everything except the slow (training/conversion) tests, for a quick edit loop.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash tools/demo.sh

clean-venv:
	rm -rf $(VENV)
