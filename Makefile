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
	$(PY) -m pytest -q -ra --durations=30 -n 2 --dist loadgroup

# Everything except the slow (training/conversion) tests, for a quick edit loop.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash tools/demo.sh

clean-venv:
	rm -rf $(VENV)

# The Pi's own userland (Debian bookworm arm64 + Python 3.11 under qemu-user, Cortex-A72 and A76):
# edgecls[device] from aarch64 wheels runs camera, verify, doctor and bench. Correctness only:
# emulated timings mean nothing. The rootfs and wheels are cached in .venv-test/pi-userland.
.PHONY: pi-check
pi-check: $(STAMP) system-deps
	PYTHON=$(CURDIR)/$(PY) bash tools/pi_userland.sh

# The test suite's network-bound caches in .venv-test (the emulated Pi userland; the MediaPipe, TFLite
# Support and tflite-runtime venvs), filled now without running a test. `make test` needs no such
# step: its session starts these same builds in the background (tests/prebuild.py, docs/testing.md).
.PHONY: test-caches
test-caches: $(STAMP) system-deps
	PYTHON=$(CURDIR)/$(PY) bash tools/pi_userland.sh --build-only
	$(PY) tests/isolated_venv.py mediapipe tflite-support tflite-runtime picamera2
	EDGECLS_IMX500_CACHE=$(CURDIR)/.venv-test/imx500 $(PY) -m edgecls.optimize.imx500.toolchain

# Sony's IMX500 toolchain (edge-mdt: TensorFlow 2.15 + MCT + imxconv-tf) in its own venv under
# ~/.cache/edgecls (export --imx500 builds it on first use too). Needs python3.11 and Java 17.
.PHONY: imx500-venv
imx500-venv: $(STAMP)
	$(PY) -m edgecls.optimize.imx500.toolchain
