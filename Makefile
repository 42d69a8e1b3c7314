# Treadle: `make up` runs it, `make test` tests it. Both install what they need
# into ./.venv from uv.lock first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.synced

.PHONY: up test fuzz install bytecode protos check-protos lint typecheck buf-lint vendor bench clean

# Bytecode is compiled here, ahead: uv writes none by default, and where
# PYTHONDONTWRITEBYTECODE is set Python never writes it, so every process would
# compile every module it imports, each time (half of a replica's start-up:
# docs/benchmarks.md). The Makefile is a prerequisite so that environments
# made before this rule get it too.
$(STAMP): pyproject.toml uv.lock Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv sync --frozen --quiet --compile-bytecode --python $(BIN)/python
	@touch $(STAMP)

# Our own modules' bytecode (editable installs get none from uv); only what
# changed since is compiled again.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q shared services >/dev/null

install: $(STAMP) bytecode

up: $(STAMP) bytecode
	exec $(BIN)/treadle up

# System programs some tests drive (chromium, wrk, promtool): installed from
# Debian when missing and possible, else their tests skip (fail in CI).
test: $(STAMP) bytecode
	@scripts/system_tools.sh
	$(BIN)/python -m pytest

# The property-based suite with many more examples, a random seed and shrinking
# (docs/development.md); no per-test time limit.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/fuzz -o timeout=0

# Regenerate the checked-in stubs from protos/ (one command).
protos: $(STAMP)
	$(BIN)/python scripts/protos.py

# Fails when the checked-in stubs differ from what `make protos` generates.
check-protos: $(STAMP)
	$(BIN)/python scripts/protos.py --check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# buf comes from the npm registry, at the version package-lock.json holds.
buf-lint:
	npm install --silent --no-audit --no-fund
	cd protos && ../node_modules/.bin/buf lint

# Copy the console's browser assets (versions from package-lock.json) into the
# gateway package; commit the result (docs/console.md).
vendor:
	$(PYTHON) scripts/vendor_assets.py

bench: $(STAMP)
	$(BIN)/treadle bench -n 10000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
