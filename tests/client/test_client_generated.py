"""The client's generated code is fresh: the models are what datamodel-code-generator makes of
the current server's OpenAPI document, and the blocking client is the async one unasynced.
A server change that alters the document fails here until ``python
clients/python/generate_models.py`` is run and its output committed."""

import importlib.util
from pathlib import Path
from types import ModuleType

from conversation_service.main import create_app
from tests.conftest import make_settings

GENERATOR = Path(__file__).parents[2] / "clients" / "python" / "generate_models.py"
HINT = "stale: run `python clients/python/generate_models.py` and commit the result"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_models", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_match_the_servers_openapi_document() -> None:
    codegen = generator()
    document = create_app(make_settings("sqlite+aiosqlite:///unused.db", "redis://x")).openapi()
    assert codegen.generate(document) == codegen.MODELS.read_text(), f"models.py is {HINT}"


def test_the_generator_reads_the_same_document_the_tests_see() -> None:
    codegen = generator()
    document = create_app(make_settings("sqlite+aiosqlite:///unused.db", "redis://x")).openapi()
    assert codegen.server_document() == document


def test_sync_client_is_the_async_client_unasynced() -> None:
    codegen = generator()
    expected = codegen.unasync(codegen.ASYNC_CLIENT.read_text())
    assert expected == codegen.SYNC_CLIENT.read_text(), f"sync.py is {HINT}"
