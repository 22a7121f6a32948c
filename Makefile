# callvault: `make demo` and `make test` each install everything they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages: espeak-ng and sox make the test speech and the demo call; flite's
# voices speak the held-out corpus (voices the detection was not tuned on);
# libsndfile1 backs soundfile (its wheel bundles one, the system copy is the fallback);
# debootstrap builds the Asterisk sandbox's chroot; sip-tester is SIPp, the test phones;
# chromium is the browser the QA app's tests drive through Playwright (no browser download).
APT_PACKAGES := espeak-ng flite sox libsndfile1 debootstrap sip-tester chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all install apt venv asterisk demo test lint typecheck pytest bench clean

all: install

install: apt venv asterisk

# The Asterisk 22 chroot (Debian unstable, from this machine's apt mirror), built once
# into the cache dir; `callvault asterisk up` starts it.
asterisk: apt venv
	$(BIN)/callvault asterisk create

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/callvault demo

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/redact_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
