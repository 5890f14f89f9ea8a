"""Conversation routes: create, read, list with filters and pagination, update, archive, delete."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.db.tables import conversations_table, messages_table
from tests.conftest import Caller, create_conversation, new_caller


async def test_create_returns_201_owned_by_token_subject(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    body = await create_conversation(
        client, title="Trip", metadata={"channel": "web"}, tags=["travel"], priority="high"
    )
    assert body["user_id"] == caller.user
    assert body["agent_id"] == "agent-1"
    assert body["status"] == "active"
    assert body["priority"] == "high"
    assert body["metadata"] == {"channel": "web"}
    assert body["tags"] == ["travel"]
    assert body["last_seq"] == 0
    assert uuid.UUID(body["id"]).version == 7
    fetched = await client.get(f"/api/v1/conversations/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == body


async def test_create_rejects_unknown_fields_and_bad_enums(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    for body in (
        {"agent_id": "a", "colour": "red"},
        {"agent_id": "a", "priority": "urgent"},
        {"agent_id": ""},
        {"title": "no agent"},
        {"agent_id": "a", "tags": ["x" * 65]},
        {"agent_id": "a", "metadata": {"k": "v" * 20_000}},
        {"agent_id": "a", "title": "nul\x00byte"},
    ):
        response = await client.post("/api/v1/conversations", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"]
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).where(conversations_table.c.tenant_id == caller.tenant)
        )
    assert count == 0


async def test_other_users_and_tenants_get_404_everywhere(
    app: object, client: httpx.AsyncClient, caller: Caller
) -> None:
    conversation = await create_conversation(client)
    cid = conversation["id"]
    message = await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    mid = message.json()["id"]
    for intruder in (new_caller(), new_caller(tenant=caller.tenant)):
        headers = intruder.headers
        calls = [
            client.get(f"/api/v1/conversations/{cid}", headers=headers),
            client.patch(f"/api/v1/conversations/{cid}", json={"title": "x"}, headers=headers),
            client.post(f"/api/v1/conversations/{cid}/archive", headers=headers),
            client.delete(f"/api/v1/conversations/{cid}", headers=headers),
            client.delete(f"/api/v1/conversations/{cid}?purge=true", headers=headers),
            client.get(f"/api/v1/conversations/{cid}/messages", headers=headers),
            client.post(
                f"/api/v1/conversations/{cid}/messages", json={"content": "x"}, headers=headers
            ),
            client.get(f"/api/v1/conversations/{cid}/messages/{mid}", headers=headers),
            client.patch(
                f"/api/v1/conversations/{cid}/messages/{mid}",
                json={"metadata": {"a": 1}},
                headers=headers,
            ),
            client.delete(f"/api/v1/conversations/{cid}/messages/{mid}", headers=headers),
        ]
        for response in await asyncio.gather(*calls):
            assert response.status_code == 404, (response.request.url, response.text)
            assert response.json()["status"] == 404
        listed = await client.get("/api/v1/conversations", headers=headers)
        assert listed.json()["data"] == []
    # Nothing the intruders tried changed anything.
    after = (await client.get(f"/api/v1/conversations/{cid}")).json()
    assert after["title"] is None
    assert after["status"] == "active"
    assert after["last_seq"] == 1


async def test_list_paginates_newest_first_with_opaque_cursor(client: httpx.AsyncClient) -> None:
    created = [(await create_conversation(client, title=f"c{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/v1/conversations", params=params)).json()
        seen += [item["id"] for item in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(created))


async def test_list_filters_by_agent_status_tag_metadata_and_time(
    client: httpx.AsyncClient,
) -> None:
    a = await create_conversation(
        client, agent_id="alpha", tags=["vip", "es"], metadata={"plan": "pro"}
    )
    b = await create_conversation(client, agent_id="beta", tags=["es"], metadata={"plan": "free"})
    c = await create_conversation(client, agent_id="alpha", metadata={"plan": 7})
    await client.post(f"/api/v1/conversations/{c['id']}/archive")

    async def ids(**params: str) -> set[str]:
        response = await client.get("/api/v1/conversations", params=params)
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["data"]}

    assert await ids(agent_id="alpha") == {a["id"], c["id"]}
    assert await ids(status="archived") == {c["id"]}
    assert await ids(tag="es") == {a["id"], b["id"]}
    assert await ids(tag="vip") == {a["id"]}
    assert await ids(**{"metadata.plan": "pro"}) == {a["id"]}
    assert await ids(**{"metadata.plan": "7"}) == set()  # string match only
    assert await ids(agent_id="alpha", status="active") == {a["id"]}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert await ids(created_after=future) == set()
    assert await ids(created_after=past) == {a["id"], b["id"], c["id"]}
    assert await ids(updated_before=past) == set()


async def test_list_refuses_forged_cursor_and_bad_filters(client: httpx.AsyncClient) -> None:
    for params in (
        {"cursor": "eyJrIjoiY29udiJ9.AAAA"},
        {"cursor": "not a cursor"},
    ):
        response = await client.get("/api/v1/conversations", params=params)
        assert response.status_code == 400, response.text
        assert response.json()["type"].endswith("/invalid-cursor")
    for params in (
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "-5"},
        {"status": "deleted"},
        {"metadata.bad key": "x"},
        {"created_after": "yesterday"},
    ):
        response = await client.get("/api/v1/conversations", params=params)
        assert response.status_code == 422, (params, response.text)


async def test_patch_merges_metadata_and_replaces_fields(client: httpx.AsyncClient) -> None:
    conversation = await create_conversation(client, metadata={"a": 1, "b": {"c": 2, "d": 3}})
    response = await client.patch(
        f"/api/v1/conversations/{conversation['id']}",
        json={"title": "New", "tags": ["x"], "metadata": {"a": None, "b": {"c": 5}, "e": True}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["title"] == "New"
    assert body["tags"] == ["x"]
    assert body["metadata"] == {"b": {"c": 5, "d": 3}, "e": True}
    assert body["updated_at"] > conversation["updated_at"]


async def test_archived_conversation_refuses_messages_until_reopened(
    client: httpx.AsyncClient,
) -> None:
    conversation = await create_conversation(client)
    cid = conversation["id"]
    archived = await client.post(f"/api/v1/conversations/{cid}/archive")
    assert archived.json()["status"] == "archived"
    refused = await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/conversation-not-writable")
    await client.patch(f"/api/v1/conversations/{cid}", json={"status": "active"})
    accepted = await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    assert accepted.status_code == 201
    assert accepted.json()["seq"] == 1


async def test_delete_hides_and_purge_erases_everything(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    soft = await create_conversation(client)
    hard = await create_conversation(client)
    for conv in (soft, hard):
        await client.post(
            f"/api/v1/conversations/{conv['id']}/messages",
            json={"content": "secret"},
            headers={"Idempotency-Key": f"k-{conv['id']}"},
        )
    assert (await client.delete(f"/api/v1/conversations/{soft['id']}")).status_code == 204
    assert (await client.get(f"/api/v1/conversations/{soft['id']}")).status_code == 404
    assert (await client.delete(f"/api/v1/conversations/{soft['id']}")).status_code == 404

    purged = await client.delete(f"/api/v1/conversations/{hard['id']}", params={"purge": "true"})
    assert purged.status_code == 204
    async with engine.connect() as conn:
        for table, column in ((conversations_table, "id"), (messages_table, "conversation_id")):
            count = await conn.scalar(
                select(func.count()).where(table.c[column] == uuid.UUID(hard["id"]))
            )
            assert count == 0
        remaining = await conn.scalar(
            select(func.count()).where(messages_table.c.conversation_id == uuid.UUID(soft["id"]))
        )
    assert remaining == 1
    # A soft-deleted conversation can still be purged by its owner.
    again = await client.delete(f"/api/v1/conversations/{soft['id']}", params={"purge": "true"})
    assert again.status_code == 204


async def test_the_v1_form_of_a_conversation_id_names_the_same_conversation(
    client: httpx.AsyncClient,
) -> None:
    # Schemathesis carried a `/v1` id (`conv_<hex>`) into an /api/v1 path and got a 422.
    cid = (await create_conversation(client))["id"]
    v1_id = "conv_" + uuid.UUID(cid).hex
    appended = await client.post(f"/api/v1/conversations/{v1_id}/messages", json={"content": "hi"})
    assert appended.status_code == 201, appended.text
    assert appended.json()["conversation_id"] == cid
    page = (await client.get(f"/api/v1/conversations/{v1_id}/messages")).json()
    assert [m["content"] for m in page["data"]] == ["hi"]
    assert (await client.get(f"/api/v1/conversations/{v1_id}")).json()["id"] == cid
    unknown = await client.get(f"/api/v1/conversations/conv_{uuid.uuid4().hex}")
    assert unknown.status_code == 404
    for malformed in ("conv_xyz", "conv_" + "0" * 31, "nope"):
        refused = await client.get(f"/api/v1/conversations/{malformed}")
        assert refused.status_code == 422, malformed
