# Every target creates/uses .venv by itself: a newcomer needs no other step.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Pinned versions of every dependency (see the file's header); empty for the newest releases.
CONSTRAINTS ?= constraints.txt

.PHONY: run test lint format bench install clean constraints client-models

$(STAMP): pyproject.toml constraints.txt clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	# The Agents SDK test: openai-agents 0.24 declares websockets<17, used only by its realtime
	# API; the suite runs websockets 17, so the SDK goes in without its declared dependencies,
	# then the ones its sessions and runs import.
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) --no-deps 'openai-agents>=0.24,<0.25'
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) griffelib httpx2 mcp python-multipart requests
	# The Python client (clients/python), which the reference orchestrator uses, editable, with
	# its langchain extra. langsmith (required by langchain-core) declares uuid-utils<1.0 while
	# the service runs uuid-utils 1.2, whose uuid7 langsmith calls unchanged: so the extra goes
	# in without declared dependencies, then the ones langchain-core and langsmith import.
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e clients/python
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) --no-deps 'langchain-core>=1.8,<1.9' langsmith langchain-protocol
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) anyio distro httpx2 jsonpatch orjson packaging pyyaml requests requests-toolbelt sniffio tenacity uuid-utils xxhash zstandard
	touch $(STAMP)

install: $(STAMP)

# The whole stack in one command: embedded Valkey, migrations, API, worker, reference orchestrator.
run: $(STAMP)
	$(BIN)/conversation-service dev

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench clients/python
	$(BIN)/ruff format --check src tests bench clients/python
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench clients/python
	$(BIN)/ruff format src tests bench clients/python

# Regenerate the client's models (and its sync half) after an API change; tests/client checks.
client-models: $(STAMP)
	$(BIN)/python clients/python/generate_models.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache

# Pin what .venv holds now (after an upgrade that passed make test and make bench).
constraints: $(STAMP)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^conversation-service'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
