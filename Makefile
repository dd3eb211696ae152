# Two set-up-and-go commands on a fresh clone:  `make run`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SAMPLE ?= data/sample
RUN_OUT ?= runs/sample

.PHONY: setup sysdeps run test bench clean

# open3d needs libusb at import time; install it with apt when it is missing (root, Debian).
sysdeps:
	@if ! ldconfig -p | grep -q 'libusb-1.0.so.0'; then \
		echo "installing libusb-1.0-0 (needed by open3d)"; \
		apt-get update -qq && apt-get install -y -qq libusb-1.0-0 >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q -e '.[test]'
	touch $@

setup: sysdeps $(VENV)/.installed

run: setup
	$(VENV)/bin/recon reconstruct $(SAMPLE) --out $(RUN_OUT)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/kernels.py

clean:
	rm -rf $(VENV) runs
