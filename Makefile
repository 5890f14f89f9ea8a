# Every target creates/uses .venv by itself: a newcomer needs no other step.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Pinned versions of every dependency (see the file's header); empty for the newest releases.
CONSTRAINTS ?= constraints.txt

.PHONY: run test lint format bench install clean constraints

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	# The Agents SDK test: openai-agents 0.24 declares websockets<17, used only by its realtime
	# API; the suite runs websockets 17, so the SDK goes in without its declared dependencies,
	# then the ones its sessions and runs import.
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) --no-deps 'openai-agents>=0.24,<0.25'
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) griffelib httpx2 mcp python-multipart requests
	touch $(STAMP)

install: $(STAMP)

# The whole stack in one command: embedded Valkey, migrations, API, worker, reference orchestrator.
run: $(STAMP)
	$(BIN)/conversation-service dev

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache

# Pin what .venv holds now (after an upgrade that passed make test and make bench).
constraints: $(STAMP)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^conversation-service'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
