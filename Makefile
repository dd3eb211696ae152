# Two set-up-and-go commands on a fresh clone:  `make run`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SAMPLE ?= data/sample
RUN_OUT ?= runs/sample

.PHONY: setup sysdeps run test lint format bench clean

# System packages (Debian, root): libusb for open3d's import; chromium + chromedriver for the browser tests
# of the viewer and the leaderboard page. Installed with apt only when missing.
sysdeps:
	@missing=""; \
	ldconfig -p | grep -q 'libusb-1.0.so.0' || missing="$$missing libusb-1.0-0"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
		echo "installing with apt:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q -e '.[test]'
	touch $@

setup: sysdeps $(VENV)/.installed

run: setup
	$(VENV)/bin/recon reconstruct $(SAMPLE) --out $(RUN_OUT) --overwrite

test: setup
	$(PY) -m pytest

# Style and layering (docs/architecture.md): ruff lint + format check, import-linter's contracts (pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) benchmarks/kernels.py

clean:
	rm -rf $(VENV) runs
