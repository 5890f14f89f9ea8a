"""One use case, every transport: each transport that offers an operation leaves the same rows,
outbox jobs, callback deliveries and events behind.

Each test runs one operation through every transport that offers it, each on a conversation of
its own, and compares what each left: the message rows (ids, times and seqs masked), the outbox
jobs (kind, queue, status), the callback deliveries (event type and payload, masked) and the
conversation's event log (event types, and the message each carries). A transport that forgets
a side effect, or adds one, fails here.
"""

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import Table, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import connect

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import (
    callback_deliveries_table,
    jobs_table,
    messages_table,
)
from conversation_service.events.log import events_key
from tests.conftest import (
    Caller,
    app_recording_callbacks,
    create_conversation,
)
from tests.websocket.helpers import SERVICE, TIMEOUT, serve, ws_url


@pytest.fixture
async def app(settings: ConversationSettings) -> AsyncIterator[FastAPI]:
    """The app with an orchestrator callback URL, so callbacks are recorded too."""
    async with app_recording_callbacks(settings) as app:
        yield app


@pytest.fixture
def redis(app: FastAPI) -> Redis:
    client: Redis = app.state.resources.redis
    return client


@pytest.fixture
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url


@pytest.fixture
async def sdk_headers(client: httpx.AsyncClient, caller: Caller) -> dict[str, str]:
    """An API key of the test's user, for ``/v1``."""
    response = await client.post(
        "/internal/v1/api-keys",
        json={"tenant": caller.tenant, "user": caller.user, "name": "contract"},
        headers=SERVICE,
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


def _mask(value: Any) -> Any:
    """A value with its digits masked: equal for ids and times written in the same format."""
    if isinstance(value, str):
        return re.sub(r"[0-9a-f]", "0", value)
    if isinstance(value, dict):
        return {key: _mask(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value


_VARYING = {
    "id",
    "conversation_id",
    "message_id",
    "parent_id",
    "branch_id",
    "branch_ancestry",
    "seq",
    "created_at",
    "updated_at",
    "deleted_at",
    "args",
}


async def _rows(engine: AsyncEngine, table: Table, cid: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(literal_column("*"))
            .select_from(table)
            .where(table.c.conversation_id == uuid.UUID(cid))
            .order_by(table.c.created_at, table.c.id)
        )
        return [dict(row) for row in rows.mappings()]


async def left_behind(app: FastAPI, redis: Redis, cid: str) -> dict[str, Any]:
    """What an operation left on a conversation, comparable across conversations."""
    engine: AsyncEngine = app.state.resources.engine
    messages = [
        {k: (v is not None if k in _VARYING else v) for k, v in row.items()}
        for row in await _rows(engine, messages_table, cid)
    ]
    jobs = sorted(
        (row["kind"], row["queue"], row["status"], row["message_id"] is not None)
        for row in await _rows(engine, jobs_table, cid)
    )
    deliveries = []
    for row in await _rows(engine, callback_deliveries_table, cid):
        payload = row["payload"]
        payload = orjson.loads(payload) if isinstance(payload, str | bytes) else payload
        deliveries.append((row["event_type"], _mask(payload)))
    events = []
    for _, fields in await redis.xrange(events_key(uuid.UUID(cid))):
        event = orjson.loads(b"{" + fields[b"b"])
        events.append((event["type"], _mask(event["data"])))
    return {"messages": messages, "jobs": jobs, "callbacks": deliveries, "events": events}


Operation = Callable[[str], Awaitable[None]]


async def _compare(
    app: FastAPI,
    client: httpx.AsyncClient,
    redis: Redis,
    transports: dict[str, Operation],
    *,
    representation: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Run each transport's operation on a fresh conversation; all must leave the same.

    ``representation`` names message fields a transport may spell its own way (``/v1`` keeps an
    item's content parts as the client sent them).
    """
    outcomes = {}
    for name, operation in transports.items():
        cid = (await create_conversation(client))["id"]
        await operation(cid)
        outcome = await left_behind(app, redis, cid)
        for stored in outcome["messages"]:
            for field in representation:
                stored.pop(field)
        for _, data in outcome["events"]:
            for field in representation:
                data.get("message", {}).pop(field, None)
        for _, payload in outcome["callbacks"]:
            for field in representation:
                payload.get("data", {}).get("message", {}).pop(field, None)
        outcomes[name] = outcome
    first_name, first = next(iter(outcomes.items()))
    for name, outcome in outcomes.items():
        for part in first:
            assert outcome[part] == first[part], f"{part}: {name} differs from {first_name}"
    return first


async def test_a_user_message_leaves_the_same_through_the_public_api_and_v1(
    app: FastAPI, client: httpx.AsyncClient, redis: Redis, sdk_headers: dict[str, str]
) -> None:
    async def public(cid: str) -> None:
        response = await client.post(
            f"/api/v1/conversations/{cid}/messages", json={"content": "hello there"}
        )
        assert response.status_code == 201, response.text

    async def v1(cid: str) -> None:
        response = await client.post(
            f"/v1/conversations/conv_{uuid.UUID(cid).hex}/items",
            json={"items": [{"type": "message", "role": "user", "content": "hello there"}]},
            headers=sdk_headers,
        )
        assert response.status_code == 200, response.text

    left = await _compare(
        app,
        client,
        redis,
        {"public": public, "v1": v1},
        representation=frozenset({"content_parts"}),
    )
    assert [kind for kind, *_ in left["jobs"]] == [
        "deliver_callback",
        "deliver_callback",
        "process_message",
    ]
    assert [event for event, _ in left["callbacks"]] == ["conversation.created", "message.created"]
    assert [event for event, _ in left["events"]] == ["session.started", "message.created"]


async def _agent_ws(base_url: str, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send the frames over the agent WebSocket, one answer each; refs chain the message id."""
    answers: list[dict[str, Any]] = []
    url = ws_url(base_url, "/internal/v1/ws/stream")
    async with connect(url, additional_headers=SERVICE, open_timeout=TIMEOUT) as ws:
        message_id = None
        for frame in frames:
            if message_id is not None and frame["type"] != "create":
                frame = {**frame, "message_id": message_id}
            await ws.send(orjson.dumps(frame).decode())
            answer = orjson.loads(await ws.recv())
            assert answer["type"] != "error", answer
            answers.append(answer)
            if answer["type"] == "created":
                message_id = answer["data"]["message"]["id"]
    return answers


async def test_a_streamed_reply_leaves_the_same_through_internal_rest_and_the_agent_websocket(
    app: FastAPI, client: httpx.AsyncClient, redis: Redis, base_url: str
) -> None:
    async def rest(cid: str) -> None:
        base = f"/internal/v1/conversations/{cid}/messages"
        created = await client.post(
            base, json={"role": "assistant", "status": "streaming"}, headers=SERVICE
        )
        assert created.status_code == 201, created.text
        mid = created.json()["id"]
        deltas = {"deltas": [{"index": 0, "text": "Hi, "}, {"index": 1, "text": "you."}]}
        sent = await client.post(f"{base}/{mid}/deltas", json=deltas, headers=SERVICE)
        assert sent.status_code == 202, sent.text
        done = await client.post(f"{base}/{mid}/complete", json={}, headers=SERVICE)
        assert done.status_code == 200, done.text

    async def websocket(cid: str) -> None:
        await _agent_ws(
            base_url,
            [
                {
                    "type": "create",
                    "conversation_id": cid,
                    "role": "assistant",
                    "status": "streaming",
                },
                {
                    "type": "delta",
                    "conversation_id": cid,
                    "deltas": [{"index": 0, "text": "Hi, "}, {"index": 1, "text": "you."}],
                },
                {"type": "complete", "conversation_id": cid},
            ],
        )

    left = await _compare(app, client, redis, {"rest": rest, "websocket": websocket})
    # The reply is processed like any final message (language, sentiment, summary check).
    assert [kind for kind, *_ in left["jobs"]] == ["deliver_callback", "process_message"]
    assert [event for event, _ in left["events"]] == [
        "message.created",
        "message.delta",
        "message.delta",
        "message.completed",
    ]
    assert [message["content"] for message in left["messages"]] == ["Hi, you."]


async def test_a_failed_reply_leaves_the_same_through_internal_rest_and_the_agent_websocket(
    app: FastAPI, client: httpx.AsyncClient, redis: Redis, base_url: str
) -> None:
    async def rest(cid: str) -> None:
        base = f"/internal/v1/conversations/{cid}/messages"
        created = await client.post(
            base, json={"role": "assistant", "status": "streaming"}, headers=SERVICE
        )
        mid = created.json()["id"]
        failed = await client.post(f"{base}/{mid}/fail", json={"error": "boom"}, headers=SERVICE)
        assert failed.status_code == 200, failed.text

    async def websocket(cid: str) -> None:
        await _agent_ws(
            base_url,
            [
                {
                    "type": "create",
                    "conversation_id": cid,
                    "role": "assistant",
                    "status": "streaming",
                },
                {"type": "fail", "conversation_id": cid, "error": "boom"},
            ],
        )

    left = await _compare(app, client, redis, {"rest": rest, "websocket": websocket})
    assert [kind for kind, *_ in left["jobs"]] == ["deliver_callback"]  # conversation.created
    assert [event for event, _ in left["events"]] == ["message.created", "message.failed"]


async def test_a_completed_agent_message_leaves_the_same_through_internal_rest_and_the_websocket(
    app: FastAPI, client: httpx.AsyncClient, redis: Redis, base_url: str
) -> None:
    body = {"role": "assistant", "content": "Done.", "metadata": {"model": "m"}}

    async def rest(cid: str) -> None:
        created = await client.post(
            f"/internal/v1/conversations/{cid}/messages", json=body, headers=SERVICE
        )
        assert created.status_code == 201, created.text

    async def websocket(cid: str) -> None:
        await _agent_ws(base_url, [{"type": "create", "conversation_id": cid, **body}])

    left = await _compare(app, client, redis, {"rest": rest, "websocket": websocket})
    assert [kind for kind, *_ in left["jobs"]] == ["deliver_callback", "process_message"]
    # The orchestrator wrote it: no message.created callback.
    assert [event for event, _ in left["callbacks"]] == ["conversation.created"]
    assert [event for event, _ in left["events"]] == ["message.created"]


async def test_a_reply_to_an_earlier_message_branches_the_same_through_rest_and_the_websocket(
    app: FastAPI, client: httpx.AsyncClient, redis: Redis, base_url: str
) -> None:
    async def asked(cid: str) -> str:
        url = f"/api/v1/conversations/{cid}/messages"
        first = (await client.post(url, json={"content": "first"})).json()
        await client.post(url, json={"content": "second"})
        return str(first["id"])

    async def check(cid: str, parent: str) -> None:
        conversation = (await client.get(f"/api/v1/conversations/{cid}")).json()
        path = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()["data"]
        assert [m["content"] for m in path] == ["first", "Again."]
        assert path[1]["parent_id"] == parent
        assert conversation["active_leaf_id"] == path[1]["id"]

    async def rest(cid: str) -> None:
        parent = await asked(cid)
        created = await client.post(
            f"/internal/v1/conversations/{cid}/messages",
            json={"role": "assistant", "content": "Again.", "parent_id": parent},
            headers=SERVICE,
        )
        assert created.status_code == 201, created.text
        await check(cid, parent)

    async def websocket(cid: str) -> None:
        parent = await asked(cid)
        frame = {"role": "assistant", "content": "Again.", "parent_id": parent}
        await _agent_ws(base_url, [{"type": "create", "conversation_id": cid, **frame}])
        await check(cid, parent)

    left = await _compare(app, client, redis, {"rest": rest, "websocket": websocket})
    assert [message["content"] for message in left["messages"]] == ["first", "second", "Again."]


async def test_deleting_a_message_leaves_the_same_through_the_public_api_and_v1(
    app: FastAPI, client: httpx.AsyncClient, redis: Redis, sdk_headers: dict[str, str]
) -> None:
    async def appended(cid: str) -> str:
        response = await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "x"})
        return str(response.json()["id"])

    async def public(cid: str) -> None:
        mid = await appended(cid)
        response = await client.delete(f"/api/v1/conversations/{cid}/messages/{mid}")
        assert response.status_code == 204, response.text

    async def v1(cid: str) -> None:
        mid = uuid.UUID(await appended(cid)).hex
        response = await client.delete(
            f"/v1/conversations/conv_{uuid.UUID(cid).hex}/items/msg_{mid}", headers=sdk_headers
        )
        assert response.status_code == 200, response.text

    left = await _compare(app, client, redis, {"public": public, "v1": v1})
    assert [event for event, _ in left["events"]][-1] == "message.deleted"


async def test_conversation_writes_leave_the_same_through_the_public_api_and_v1(
    app: FastAPI, client: httpx.AsyncClient, redis: Redis, sdk_headers: dict[str, str]
) -> None:
    async def public(cid: str) -> None:
        updated = await client.patch(
            f"/api/v1/conversations/{cid}", json={"metadata": {"stage": "greeted"}}
        )
        assert updated.status_code == 200, updated.text
        deleted = await client.delete(f"/api/v1/conversations/{cid}")
        assert deleted.status_code == 204, deleted.text

    async def v1(cid: str) -> None:
        public_id = f"conv_{uuid.UUID(cid).hex}"
        updated = await client.post(
            f"/v1/conversations/{public_id}",
            json={"metadata": {"stage": "greeted"}},
            headers=sdk_headers,
        )
        assert updated.status_code == 200, updated.text
        deleted = await client.delete(f"/v1/conversations/{public_id}", headers=sdk_headers)
        assert deleted.status_code == 200, deleted.text

    left = await _compare(app, client, redis, {"public": public, "v1": v1})
    assert [event for event, _ in left["callbacks"]] == [
        "conversation.created",
        "conversation.deleted",
    ]
    assert [event for event, _ in left["events"]] == ["conversation.updated"]


async def test_an_agent_message_naming_its_agent_leaves_the_same_through_rest_and_the_websocket(
    app: FastAPI, client: httpx.AsyncClient, redis: Redis, base_url: str
) -> None:
    body = {"role": "assistant", "content": "Billing here.", "agent_id": "billing-agent"}

    async def rest(cid: str) -> None:
        created = await client.post(
            f"/internal/v1/conversations/{cid}/messages", json=body, headers=SERVICE
        )
        assert created.status_code == 201, created.text

    async def websocket(cid: str) -> None:
        await _agent_ws(base_url, [{"type": "create", "conversation_id": cid, **body}])

    left = await _compare(app, client, redis, {"rest": rest, "websocket": websocket})
    assert [message["agent_id"] for message in left["messages"]] == ["billing-agent"]
    # Event payloads are masked (hex digits zeroed) for the comparison.
    assert [data["message"]["agent_id"] for _, data in left["events"]] == ["0illing-0g0nt"]


async def test_creating_a_conversation_leaves_the_same_through_the_public_and_internal_api(
    app: FastAPI, client: httpx.AsyncClient, redis: Redis, caller: Caller
) -> None:
    body = {"agent_id": "agent-1", "title": "Hello", "workflow_id": "wf"}
    public = await client.post("/api/v1/conversations", json=body)
    internal = await client.post(
        "/internal/v1/conversations",
        json={**body, "tenant": caller.tenant, "user": caller.user},
        headers=SERVICE,
    )
    assert (public.status_code, internal.status_code) == (201, 201), internal.text
    by_public = await left_behind(app, redis, public.json()["id"])
    by_internal = await left_behind(app, redis, internal.json()["id"])
    assert by_internal == by_public
    assert [event for event, _ in by_public["callbacks"]] == ["conversation.created"]
    shown = {k: v for k, v in internal.json().items() if k != "messages"}
    assert _mask(shown) == _mask(public.json())
