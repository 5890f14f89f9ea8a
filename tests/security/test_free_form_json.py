"""Free-form JSON goes through one check on every route and transport.

Metadata, tracked-context entities, topics and variables, content parts, session variables,
`/v1` bodies and WebSocket frames: what PostgreSQL or the JSON encoder cannot store (an integer
beyond 64 bits, nesting past the documented depth, a lone surrogate, NUL) and what is not JSON
at all (NaN, Infinity) is refused with a 422 naming the field, never a 500, never stored as
``null``. Bodies are sent as raw bytes: no JSON library writes NaN or a lone surrogate.
Runs on SQLite and PostgreSQL, which differ exactly here (SQLite stores NUL, PostgreSQL refuses it).
"""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import connect

from tests.conftest import Caller, create_conversation
from tests.security.conftest import SERVICE, issue_api_key
from tests.security.test_hostile_input import footprint
from tests.websocket.helpers import TIMEOUT, Client, serve, ws_client, ws_url

# Raw JSON text of values no route may store.
UNSTORABLE: dict[str, str] = {
    "integer beyond 64 bits": "18446744073709551616",
    "300 nested arrays": "[" * 300 + "]" * 300,
    "lone surrogate": '"\\ud800"',
    "NUL in a value": '"a\\u0000b"',
    "NUL in a key": '{"k\\u0000": 1}',
    "lone surrogate in a key": '{"\\ud800": 1}',
    "NaN": "NaN",
    "Infinity": "Infinity",
    "minus Infinity": "-Infinity",
}
JSON = {"Content-Type": "application/json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
# (field the error must name, body template: ``X`` stands for the unstorable value)
TRACKED_CONTEXT_BODIES = [
    ("entities", '{"entities": [{"n": X}]}'),
    ("entities", '{"entities": {"a": X}}'),
    ("entities", '{"entities": X}'),
    ("variables", '{"variables": {"a": X}}'),
    ("topics", '{"topics": [X]}'),
    ("intent", '{"intent": X}'),
    ("workflow_step", '{"workflow_step": X}'),
]


@dataclass(frozen=True)
class World:
    """A conversation with a user message, a streaming reply and a session."""

    conversation_id: str
    message_id: str
    reply_id: str
    session_id: str


@pytest.fixture
async def world(client: httpx.AsyncClient) -> World:
    cid = (await create_conversation(client, metadata={"kept": 1}))["id"]
    posted = await client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": "hi", "metadata": {"kept": 1}}
    )
    reply = await client.post(
        f"/internal/v1/conversations/{cid}/messages",
        json={"role": "assistant", "status": "streaming", "metadata": {"kept": 1}},
        headers=SERVICE,
    )
    session = await client.post(f"/api/v1/conversations/{cid}/sessions", json={"channel": "web"})
    assert (posted.status_code, reply.status_code, session.status_code) == (201, 201, 201)
    return World(cid, posted.json()["id"], reply.json()["id"], session.json()["id"])


def body(template: str, value: str) -> bytes:
    """The template with ``X`` replaced by the raw value."""
    return template.replace("X", value).encode()


def assert_422_naming(response: httpx.Response, field: str) -> None:
    """A problem+json 422 whose errors locate ``field``."""
    assert response.status_code == 422, (field, response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/validation-error"), problem
    located = [err["loc"] for err in problem["errors"]]
    assert any(field in loc for loc in located), (field, located)


async def snapshot(client: httpx.AsyncClient, world: World) -> list[Any]:
    """Everything the battery could have changed, as the API reads it back."""
    cid = world.conversation_id
    reads = [
        client.get(f"/api/v1/conversations/{cid}"),
        client.get(f"/api/v1/conversations/{cid}/messages"),
        client.get(f"/internal/v1/conversations/{cid}/tracked-context", headers=SERVICE),
        client.get(f"/internal/v1/sessions/{world.session_id}/context", headers=SERVICE),
    ]
    results = []
    for read in reads:
        response = await read
        assert response.status_code == 200, response.text
        results.append(response.json())
    results[0].pop("updated_at", None)
    return results


@pytest.mark.parametrize("value", UNSTORABLE.values(), ids=UNSTORABLE.keys())
async def test_unstorable_tracked_context_is_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, world: World, value: str
) -> None:
    url = f"/internal/v1/conversations/{world.conversation_id}/tracked-context"
    for field, template in TRACKED_CONTEXT_BODIES:
        response = await client.patch(
            url, content=body(template, value), headers={**SERVICE, **MERGE_PATCH}
        )
        assert_422_naming(response, field)
    current = await client.get(url, headers=SERVICE)
    assert current.json()["version"] == 0
    assert current.json()["data"] == {}


@pytest.mark.parametrize("value", UNSTORABLE.values(), ids=UNSTORABLE.keys())
async def test_unstorable_free_form_json_is_422_naming_the_field_on_every_route(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller, world: World, value: str
) -> None:
    cid, mid, rid = world.conversation_id, world.message_id, world.reply_id
    messages = f"/api/v1/conversations/{cid}/messages"
    internal = f"/internal/v1/conversations/{cid}/messages"
    targets: list[tuple[str, str, dict[str, str], str, str]] = [
        ("POST", "/api/v1/conversations", JSON, "metadata", '{"agent_id": "a", "metadata": X}'),
        (
            "POST",
            "/api/v1/conversations",
            JSON,
            "metadata",
            '{"agent_id": "a", "metadata": {"a": X}}',
        ),
        (
            "PATCH",
            f"/api/v1/conversations/{cid}",
            MERGE_PATCH,
            "metadata",
            '{"metadata": {"a": X}}',
        ),
        ("POST", messages, JSON, "metadata", '{"content": "x", "metadata": {"a": {"b": X}}}'),
        (
            "POST",
            messages,
            JSON,
            "content_parts",
            '{"content": "x", "content_parts": [{"type": "json", "data": X}]}',
        ),
        ("PATCH", f"{messages}/{mid}", MERGE_PATCH, "metadata", '{"metadata": {"a": X}}'),
        (
            "POST",
            internal,
            {**JSON, **SERVICE},
            "metadata",
            '{"role": "tool", "content": "x", "metadata": {"a": [X]}}',
        ),
        ("POST", f"{internal}/{rid}/complete", {**JSON, **SERVICE}, "metadata", '{"metadata": X}'),
        (
            "PATCH",
            f"/internal/v1/sessions/{world.session_id}/context",
            {**MERGE_PATCH, **SERVICE},
            "variables",
            '{"variables": {"a": X}}',
        ),
    ]
    before = (await footprint(engine, caller.tenant), await snapshot(client, world))
    for method, url, headers, field, template in targets:
        response = await client.request(method, url, content=body(template, value), headers=headers)
        assert_422_naming(response, field)
    assert (await footprint(engine, caller.tenant), await snapshot(client, world)) == before


@pytest.mark.parametrize("value", UNSTORABLE.values(), ids=UNSTORABLE.keys())
async def test_unstorable_v1_bodies_are_400_naming_the_param(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller, world: World, value: str
) -> None:
    key = {"Authorization": f"Bearer {await issue_api_key(client, caller)}", **JSON}
    conv = f"/v1/conversations/conv_{uuid.UUID(world.conversation_id).hex}"
    item = '{"items": [{"type": "message", "role": "user", "content": [{"type": "input_text", '
    targets = [
        ("/v1/conversations", "metadata", '{"metadata": {"a": X}}'),
        (conv, "metadata", '{"metadata": {"a": X}}'),
        (f"{conv}/items", "items[0].content[0].text", item + '"text": X}]}]}'),
    ]
    before = await footprint(engine, caller.tenant)
    for url, param, template in targets:
        response = await client.post(url, content=body(template, value), headers=key)
        assert response.status_code == 400, (url, response.text[:300])
        assert response.json()["error"]["param"].startswith(param), response.text[:300]
    assert await footprint(engine, caller.tenant) == before


async def test_nan_and_infinity_in_message_metadata_are_refused_not_stored_as_null(
    client: httpx.AsyncClient, world: World
) -> None:
    url = f"/api/v1/conversations/{world.conversation_id}/messages"
    before = (await client.get(url)).json()["data"]
    raw = b'{"content": "x", "metadata": {"v": NaN, "w": Infinity}}'
    response = await client.post(url, content=raw, headers=JSON)
    assert_422_naming(response, "metadata")
    assert "NaN" in response.json()["detail"]
    assert (await client.get(url)).json()["data"] == before


async def test_a_refused_body_keeps_the_keep_alive_connection(
    app: FastAPI, caller: Caller, world: World
) -> None:
    url = f"/internal/v1/conversations/{world.conversation_id}/tracked-context"
    async with (
        serve(app) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=SERVICE, timeout=TIMEOUT) as http,
    ):
        peers: set[object] = set()
        for value in UNSTORABLE.values():
            refused = await http.patch(
                url, content=body('{"entities": [{"n": X}]}', value), headers=MERGE_PATCH
            )
            assert refused.status_code == 422, refused.text[:300]
            fine = await http.get(url)
            assert fine.status_code == 200
            for response in (refused, fine):
                peers.add(response.extensions["network_stream"].get_extra_info("client_addr"))
    assert len(peers) == 1, peers


@pytest.fixture
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url


def assert_invalid_frame_naming(frame: dict[str, Any], field: str) -> None:
    """An error frame naming ``field``, or refusing the frame whole when its JSON parser does
    (pydantic's refuses lone surrogates and deep nesting before any field is read)."""
    assert frame["type"] == "error", frame
    assert frame["data"]["code"] == "invalid_frame", frame
    detail = frame["data"]["detail"]
    assert field in detail or detail == "frame is not valid JSON", frame


@pytest.mark.parametrize("value", UNSTORABLE.values(), ids=UNSTORABLE.keys())
async def test_unstorable_json_in_websocket_frames_is_an_error_frame_naming_the_field(
    base_url: str, client: httpx.AsyncClient, caller: Caller, world: World, value: str
) -> None:
    cid = world.conversation_id
    async with connect(
        ws_url(base_url, "/internal/v1/ws/stream"), additional_headers=SERVICE
    ) as connection:
        agent = Client(connection)
        await agent.send(
            f'{{"type": "create", "conversation_id": "{cid}", "role": "tool", '
            f'"content": "x", "metadata": {{"a": {value}}}}}'
        )
        refused = await agent.recv()
        await agent.send({"type": "ping"})
        assert (await agent.recv())["type"] == "pong"
    assert_invalid_frame_naming(refused, "metadata")
    async with ws_client(base_url, caller.token) as user:
        await user.send(f'{{"type": "ping", "data": {{"a": {value}}}}}')
        error = await user.recv()
        await user.send({"type": "ping"})
        assert (await user.recv())["type"] == "pong"
    assert_invalid_frame_naming(error, "data")
    messages = await client.get(f"/api/v1/conversations/{cid}/messages")
    assert len(messages.json()["data"]) == 2  # the fixture's own two
