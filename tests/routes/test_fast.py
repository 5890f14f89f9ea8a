"""The fast twins (``routes.fast``) answer exactly as the FastAPI routes they stand in for.

Every case runs twice: on the suite's app (fast twins on) against conversation A, and on a
second app over the same database with ``fast_routes`` off against conversation B, seeded the
same way. Responses must agree in status, content type, headers that matter and body (ids,
times, cursors and event ids masked). The fast app's counter says which cases a twin served and
which it declined to FastAPI, so the comparison covers both paths on purpose.
"""

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from conversation_service.config.settings import ConversationSettings
from conversation_service.main import create_app
from conversation_service.websocket.events import read_after
from tests.conftest import INTERNAL_KEY, Caller, create_conversation, new_caller

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z")
_EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
SERVICE = {"Authorization": f"Bearer {INTERNAL_KEY}"}


@pytest.fixture(scope="module")
async def plain_app(settings: ConversationSettings) -> AsyncIterator[FastAPI]:
    """The same service with every request on FastAPI's routes."""
    app = create_app(settings.model_copy(update={"fast_routes": False}))
    async with app.router.lifespan_context(app):
        yield app


@dataclass
class Side:
    """One app, its client and the conversation (and streaming messages) it works on."""

    app: FastAPI
    client: httpx.AsyncClient
    conversation: str
    streaming: list[str]

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        path = path.replace("{c}", self.conversation)
        if "{m}" in path:
            path = path.replace("{m}", self.streaming.pop())
        if "headers" in kwargs:
            # Idempotency keys are per user: each side needs its own.
            kwargs["headers"] = {
                k: v.replace("{c}", self.conversation) for k, v in kwargs["headers"].items()
            }
        return await self.client.request(method, path, **kwargs)


async def _side(app: FastAPI, caller: Caller) -> AsyncIterator[Side]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=caller.headers
    ) as client:
        conversation = (await create_conversation(client))["id"]
        for n in range(5):
            role_message = {"content": f"message {n} about the weather in Lisbon"}
            response = await client.post(
                f"/api/v1/conversations/{conversation}/messages", json=role_message
            )
            assert response.status_code == 201, response.text
        streaming = []
        for _ in range(1):
            response = await client.post(
                f"/internal/v1/conversations/{conversation}/messages",
                json={"role": "assistant", "status": "streaming"},
                headers=SERVICE,
            )
            assert response.status_code == 201, response.text
            streaming.append(response.json()["id"])
        yield Side(app, client, conversation, list(streaming))
        # Open streams sit in a set every deployment on this Redis database sweeps: close them.
        for message_id in streaming:
            response = await client.post(
                f"/internal/v1/conversations/{conversation}/messages/{message_id}/complete",
                json={},
                headers=SERVICE,
            )
            assert response.status_code == 200, response.text


@pytest.fixture
async def sides(
    app: FastAPI, plain_app: FastAPI, caller: Caller
) -> AsyncIterator[tuple[Side, Side]]:
    """Conversation A on the fast app, conversation B (seeded alike) on the plain one."""
    async for fast in _side(app, caller):
        async for plain in _side(plain_app, caller):
            yield fast, plain


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if key == "next_cursor":
        return value is not None
    if isinstance(value, str):
        if _EVENT_ID.match(value):
            return "<event>"
        return _TIME.sub("<time>", _UUID.sub("<id>", value))
    return value


def _outcome(response: httpx.Response) -> tuple[int, str, str | None, str | None, Any]:
    content_type = response.headers.get("content-type", "")
    body = response.json() if "json" in content_type else response.text
    return (
        response.status_code,
        content_type,
        response.headers.get("www-authenticate"),
        response.headers.get("idempotent-replayed"),
        _mask(body),
    )


def _served(app: FastAPI) -> dict[str, float]:
    counts: dict[str, float] = {"served": 0.0, "declined": 0.0}
    for metric in app.state.resources.metrics.fast_routes.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["outcome"]] += sample.value
    return counts


OTHER = new_caller()
MESSAGES = "/api/v1/conversations/{c}/messages"
CONTEXT = "/internal/v1/conversations/{c}/context"
DELTAS = "/internal/v1/conversations/{c}/messages/{m}/deltas"
UNKNOWN = f"/api/v1/conversations/{uuid.uuid4()}/messages"

# (method, path, request options, served by a fast twin?)
CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    # History pages.
    ("GET", MESSAGES, {}, True),
    ("GET", MESSAGES, {"params": {"order": "desc", "limit": "3"}}, True),
    ("GET", MESSAGES, {"params": {"after_seq": "2", "limit": "2"}}, True),
    ("GET", MESSAGES, {"params": {"before_seq": "5", "order": "desc"}}, True),
    ("GET", MESSAGES, {"params": {"limit": "2", "unknown": "x"}}, True),
    ("GET", MESSAGES, {"params": {"cursor": "not-a-cursor"}}, True),
    ("GET", MESSAGES, {"params": {"limit": "0"}}, False),
    ("GET", MESSAGES, {"params": {"limit": "101"}}, False),
    ("GET", MESSAGES, {"params": {"limit": "05"}}, False),
    ("GET", MESSAGES, {"params": {"limit": "two"}}, False),
    ("GET", MESSAGES, {"params": {"order": "up"}}, False),
    ("GET", MESSAGES, {"params": {"after_seq": "-1"}}, False),
    ("GET", MESSAGES, {"params": [("limit", "2"), ("limit", "3")]}, False),
    ("GET", MESSAGES, {"params": {"cursor": "x" * 513}}, False),
    ("GET", UNKNOWN, {}, True),
    ("GET", MESSAGES, {"headers": {"Authorization": "Bearer not-a-jwt"}}, True),
    ("GET", MESSAGES, {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}}, False),
    ("GET", MESSAGES, {"headers": {"Authorization": ""}}, False),
    ("GET", MESSAGES, {"headers": OTHER.headers}, True),
    # Appends.
    ("POST", MESSAGES, {"json": {"content": "hello"}}, True),
    ("POST", MESSAGES, {"json": {"content": "pinned", "metadata": {"pinned": True}}}, True),
    ("POST", MESSAGES, {"json": {"content": "   "}}, False),
    ("POST", MESSAGES, {"json": {"content": "hi", "surprise": 1}}, False),
    ("POST", MESSAGES, {"json": {}}, False),
    (
        "POST",
        MESSAGES,
        {"content": b'{"content": "hi"', "headers": {"content-type": "application/json"}},
        False,
    ),
    (
        "POST",
        MESSAGES,
        {"json": {"content": "retry"}, "headers": {"Idempotency-Key": "k-{c}"}},
        False,
    ),
    ("POST", UNKNOWN, {"json": {"content": "hello"}}, True),
    ("POST", MESSAGES, {"json": {"content": "hello"}, "headers": OTHER.headers}, True),
    # Context windows.
    ("GET", CONTEXT, {"headers": SERVICE}, True),
    ("GET", CONTEXT, {"headers": SERVICE, "params": {"strategy": "last_n", "last_n": "3"}}, True),
    (
        "GET",
        CONTEXT,
        {"headers": SERVICE, "params": {"max_tokens": "60", "format": "openai"}},
        True,
    ),
    ("GET", CONTEXT, {"headers": SERVICE, "params": {"encoding": "cl100k_base"}}, True),
    ("GET", CONTEXT, {"headers": SERVICE, "params": {"max_tokens": "10"}}, False),
    ("GET", CONTEXT, {"headers": SERVICE, "params": {"strategy": "everything"}}, False),
    ("GET", CONTEXT, {"headers": SERVICE, "params": {"format": "xml"}}, False),
    ("GET", CONTEXT, {"headers": {"Authorization": "Bearer wrong-key"}}, True),
    ("GET", CONTEXT, {}, True),  # a user's JWT is not a service key
    # Deltas.
    ("POST", DELTAS, {"headers": SERVICE, "json": {"deltas": [{"index": 0, "text": "Hel"}]}}, True),
    (
        "POST",
        DELTAS,
        {
            "headers": SERVICE,
            "json": {"deltas": [{"index": 0, "text": "a"}, {"index": 0, "text": "a"}]},
        },
        True,
    ),
    ("POST", DELTAS, {"headers": SERVICE, "json": {"deltas": []}}, False),
    ("POST", DELTAS, {"headers": SERVICE, "json": {"deltas": [{"index": -1, "text": "x"}]}}, False),
    (
        "POST",
        DELTAS.replace("{m}", str(uuid.uuid4())),
        {"headers": SERVICE, "json": {"deltas": [{"index": 0, "text": "x"}]}},
        True,
    ),
    ("POST", DELTAS, {"json": {"deltas": [{"index": 0, "text": "x"}]}}, True),
]


@pytest.mark.parametrize(("method", "path", "options", "served"), CASES)
async def test_fast_twin_answers_as_the_route_does(
    sides: tuple[Side, Side], method: str, path: str, options: dict[str, Any], served: bool
) -> None:
    fast, plain = sides
    before = _served(fast.app)
    fast_response = await fast.request(method, path, **options)
    after = _served(fast.app)
    plain_response = await plain.request(method, path, **options)

    assert _outcome(fast_response) == _outcome(plain_response)
    outcome = "served" if served else "declined"
    assert after[outcome] == before[outcome] + 1, (outcome, fast_response.text)
    assert _served(plain.app) == {"served": 0.0, "declined": 0.0}


async def test_fast_append_queues_the_same_work_and_events(
    sides: tuple[Side, Side], app: FastAPI
) -> None:
    fast, plain = sides
    for side in sides:
        response = await side.request("POST", MESSAGES, json={"content": "what now?"})
        assert response.status_code == 201
    pages = [
        (await side.request("GET", MESSAGES, params={"order": "desc", "limit": "1"})).json()
        for side in (fast, plain)
    ]
    assert _mask(pages[0]) == _mask(pages[1])
    redis = app.state.resources.redis
    tails = [await read_after(redis, side.conversation, None, count=1000) for side in sides]
    types = [[orjson.loads(entry.frame)["type"] for entry in tail.entries] for tail in tails]
    assert types[0] == types[1]
    assert types[0][-1] == "message.created"
