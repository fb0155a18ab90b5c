# fruix_dagster — quick start: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster

# Debian packages the test suite drives for real (bmake builds the sample
# tree, bsdtar is the guest's tar, sshd is the test guest, mtree checks
# manifests).
TEST_DEBS := bmake libarchive-tools openssh-server mtree-netbsd dash devscripts chromium postgresql

.PHONY: demo test install install-test test-deps dagster-home dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	# one coherent release set: any conflict fails the install here
	$(BIN)/pip check
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip check
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

dagster-home:
	@mkdir -p "$(DAGSTER_HOME)"
	@cmp -s dagster.yaml "$(DAGSTER_HOME)/dagster.yaml" || cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

# The whole build of the default target on the embedded default (a local
# guest building the bundled sample tree), then the harness-style report.
demo: install dagster-home
	env -u FRUIX_CONFIG $(BIN)/fruix-dagster check-config > /dev/null
	env -u FRUIX_CONFIG $(BIN)/fruix-dagster build
	env -u FRUIX_CONFIG $(BIN)/fruix-dagster report

# The Dagster UI on http://127.0.0.1:3000 with the daemon (schedules, queue),
# through dg ([tool.dg] in pyproject.toml), as with the venv activated.
dev: $(VENV)/.installed-dev dagster-home
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dg dev -h 127.0.0.1 -p 3000

test-deps:
	@missing=""; for p in $(TEST_DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

test: install-test test-deps
	$(BIN)/pip check
	$(BIN)/python -m pytest -q -p no:cacheprovider

# A root install sets schg (chattr +i) on precious files in the demo's build root.
clean:
	@if [ -d .dagster ]; then \
		if command -v chflags >/dev/null 2>&1; then chflags -R -P noschg,nouchg .dagster || :; \
		elif command -v chattr >/dev/null 2>&1; then chattr -R -f -i -a .dagster || :; fi; \
	fi
	rm -rf $(VENV) .dagster *.egg-info
