"""Every free-form JSON field a client can send goes through the one check (``check_json``).

The bodies are read from the live OpenAPI document and the WebSocket frame unions, so a route or
frame added later with an unchecked ``Any`` fails here before it can store what PostgreSQL
refuses or turn NaN into ``null``.
"""

import importlib
import inspect
import pkgutil
from typing import Annotated, Any, get_args, get_origin

import pytest
from fastapi import FastAPI
from pydantic import AfterValidator, BaseModel

from conversation_service import models as schemas
from conversation_service.models import streaming
from conversation_service.models.common import (
    InputModel,
    check_json,
    check_json_document,
    check_metadata,
)

CHECKS = (check_json, check_json_document, check_metadata)
# Models that accept extra keys and check them all at once in a model validator.
EXTRAS_CHECKED = {"ContentPart"}
# Models whose model validator sends the whole item, every field and extra key, through
# ``check_json_document`` (the /v1 tool items, kept whole).
DOCUMENT_CHECKED = {"ToolItemIn"}


def _checked(metadata: list[Any] | tuple[Any, ...]) -> bool:
    return any(isinstance(m, AfterValidator) and m.func in CHECKS for m in metadata)


def _unchecked(annotation: Any, metadata: list[Any] | tuple[Any, ...], where: str) -> list[str]:
    if _checked(metadata):
        return []
    if get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        return _unchecked(inner, extra, where)
    if annotation is Any or annotation is object:
        return [where]
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return unchecked_fields(annotation)
    found: list[str] = []
    for arg in get_args(annotation):
        found += _unchecked(arg, (), where)
    return found


def unchecked_fields(model: type[BaseModel]) -> list[str]:
    """``Model.field`` for each free-form field of ``model`` (or a nested model) not checked."""
    found: list[str] = []
    if any(base.__name__ in DOCUMENT_CHECKED for base in model.__mro__):
        return found
    if model.model_config.get("extra") == "allow" and model.__name__ not in EXTRAS_CHECKED:
        found.append(f"{model.__name__} (extra keys)")
    for name, field in model.model_fields.items():
        found += _unchecked(field.annotation, field.metadata, f"{model.__name__}.{name}")
    return found


def input_models() -> dict[str, type[BaseModel]]:
    """Every model the schema modules define, by the name the OpenAPI document gives it."""
    modules = [
        importlib.import_module(f"{schemas.__name__}.{info.name}")
        for info in pkgutil.iter_modules(schemas.__path__)
    ]
    return {
        cls.__name__: cls
        for module in modules
        for cls in vars(module).values()
        if inspect.isclass(cls) and issubclass(cls, BaseModel)
    }


def _refs(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        own = [ref.rsplit("/", 1)[-1]] if isinstance(ref, str) else []
        return own + [name for value in schema.values() for name in _refs(value)]
    if isinstance(schema, list):
        return [name for value in schema for name in _refs(value)]
    return []


def request_bodies(app: FastAPI) -> dict[str, str]:
    """Schema name of each operation's request body, keyed by ``METHOD path``."""
    bodies: dict[str, str] = {}
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            for name in _refs(list(content.values())):
                bodies[f"{method.upper()} {path} ({name})"] = name
    return bodies


def test_the_schema_walk_finds_an_unchecked_field() -> None:
    class Unchecked(BaseModel):
        data: dict[str, Any] | None = None

    assert unchecked_fields(Unchecked) == ["Unchecked.data"]


def test_every_request_body_is_an_input_model_checking_its_free_form_json(app: FastAPI) -> None:
    models = input_models()
    bodies = request_bodies(app)
    assert len(bodies) >= 10, bodies
    unknown = sorted(op for op, name in bodies.items() if name not in models)
    assert unknown == [], "request bodies defined outside conversation_service.models"
    # InputModel's number fields refuse NaN and Infinity, which Python's JSON parser accepts.
    assert [op for op, name in bodies.items() if not issubclass(models[name], InputModel)] == []
    unchecked = {op: unchecked_fields(models[name]) for op, name in bodies.items()}
    assert {op: fields for op, fields in unchecked.items() if fields} == {}


@pytest.mark.parametrize(
    "frame", [streaming.AgentFrame, streaming.ClientFrame], ids=["agent", "client"]
)
def test_every_websocket_frame_checks_its_free_form_json(frame: Any) -> None:
    assert _unchecked(frame, (), "frame") == []
