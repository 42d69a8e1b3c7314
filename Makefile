# Treadle: `make up` runs it, `make test` tests it. Each installs what it needs
# into ./.venv from uv.lock first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two installs from uv.lock into the same ./.venv: what runs (the server extra,
# no dev tools) for `make up`, and everything (every extra and the dev group)
# for the rest. Each has its own stamp.
RUN_STAMP := $(VENV)/.synced-run
DEV_STAMP := $(VENV)/.synced-dev
SYNC      := $(BIN)/uv sync --frozen --quiet --compile-bytecode --python $(BIN)/python

.PHONY: up test fuzz install bytecode protos check-protos lint typecheck buf-lint vendor bench wheel-check clean

$(BIN)/uv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $@ || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv

# Bytecode is compiled here, ahead: uv writes none by default, and where
# PYTHONDONTWRITEBYTECODE is set Python never writes it, so every process would
# compile every module it imports, each time (half of a replica's start-up:
# docs/benchmarks.md). The Makefile is a prerequisite so that environments
# made before this rule get it too.
#
# --inexact: in an environment made by `make test` nothing is removed (the dev
# tools stay); on a fresh clone only what runs is installed.
$(RUN_STAMP): pyproject.toml uv.lock Makefile | $(BIN)/uv
	$(SYNC) --no-dev --extra server --inexact
	@touch $@

# Exact: what the lock does not hold goes. It holds all that runs, so the run
# stamp is fresh too.
$(DEV_STAMP): pyproject.toml uv.lock Makefile | $(BIN)/uv
	$(SYNC) --all-extras
	@touch $@ $(RUN_STAMP)

# Our own modules' bytecode (editable installs get none from uv); only what
# changed since is compiled again.
bytecode: | $(BIN)/uv
	@$(BIN)/python -m compileall -q shared services >/dev/null

install: $(DEV_STAMP) bytecode

up: $(RUN_STAMP) bytecode
	exec $(BIN)/treadle up

# System programs some tests drive (chromium, wrk, promtool): installed from
# Debian when missing and possible, else their tests skip (fail in CI).
test: $(DEV_STAMP) bytecode
	@scripts/system_tools.sh
	$(BIN)/python -m pytest

# The property-based suite with many more examples, a random seed and shrinking
# (docs/development.md); no per-test time limit.
fuzz: $(DEV_STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/fuzz -o timeout=0

# Regenerate the checked-in stubs from protos/ (one command).
protos: $(DEV_STAMP)
	$(BIN)/python scripts/protos.py

# Fails when the checked-in stubs differ from what `make protos` generates.
check-protos: $(DEV_STAMP)
	$(BIN)/python scripts/protos.py --check

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

# buf comes from the npm registry, at the version package-lock.json holds.
buf-lint:
	npm install --silent --no-audit --no-fund
	cd protos && ../node_modules/.bin/buf lint

# Copy the console's browser assets (versions from package-lock.json) into the
# gateway package; commit the result (docs/console.md).
vendor:
	$(PYTHON) scripts/vendor_assets.py

bench: $(DEV_STAMP)
	$(BIN)/treadle bench -n 10000

# The wheel as users get it: built, installed without extras into a clean
# venv (size checked), `treadle --help`, a submit to a real replica, mypy on a
# file using the client; on each supported Python found here
# (scripts/wheelcheck.py; CI runs it).
wheel-check: $(DEV_STAMP)
	$(BIN)/python scripts/wheelcheck.py --supported

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
