"""Message trees: parent_id, the active leaf, paths in history, siblings, branch switches."""

import asyncio
import itertools
import uuid
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.db.tables import conversations_table, messages_table
from conversation_service.events.log import read_after
from tests.conftest import Caller, create_conversation, new_caller
from tests.websocket.helpers import SERVICE, complete, post_deltas, start_reply


def _messages(cid: str) -> str:
    return f"/api/v1/conversations/{cid}/messages"


async def say(
    client: httpx.AsyncClient, cid: str, content: str, **parent: str | None
) -> dict[str, Any]:
    """A user message; ``parent_id=…`` is sent only when given (None: a new root)."""
    response = await client.post(_messages(cid), json={"content": content, **parent})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def reply(
    client: httpx.AsyncClient, cid: str, content: str, parent_id: str
) -> dict[str, Any]:
    """The orchestrator's completed reply to ``parent_id``."""
    response = await client.post(
        f"/internal/v1/conversations/{cid}/messages",
        json={"role": "assistant", "content": content, "parent_id": parent_id},
        headers=SERVICE,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def history(client: httpx.AsyncClient, cid: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(_messages(cid), params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def contents(client: httpx.AsyncClient, cid: str, **params: Any) -> list[str]:
    return [m["content"] for m in await history(client, cid, **params)]


async def active_leaf(client: httpx.AsyncClient, cid: str) -> str | None:
    leaf: str | None = (await client.get(f"/api/v1/conversations/{cid}")).json()["active_leaf_id"]
    return leaf


async def edited_conversation(client: httpx.AsyncClient) -> tuple[str, dict[str, dict[str, Any]]]:
    """u1 → a1 → u2 → a2, then u2 edited into u2' (a sibling of u2 under a1)."""
    cid = (await create_conversation(client))["id"]
    m: dict[str, dict[str, Any]] = {}
    m["u1"] = await say(client, cid, "u1")
    m["a1"] = await reply(client, cid, "a1", m["u1"]["id"])
    m["u2"] = await say(client, cid, "u2")
    m["a2"] = await reply(client, cid, "a2", m["u2"]["id"])
    m["u2'"] = await say(client, cid, "u2'", parent_id=m["a1"]["id"])
    return cid, m


@pytest.fixture
def redis(app: FastAPI) -> Redis:
    client: Redis = app.state.resources.redis
    return client


async def _event_types(redis: Redis, cid: str) -> list[tuple[str, dict[str, Any]]]:
    chunk = await read_after(redis, cid, None, count=10_000)
    frames = [orjson.loads(entry.frame) for entry in chunk.entries]
    return [(f["type"], f["data"]) for f in frames]


async def test_messages_without_parent_id_form_one_line_and_move_the_active_leaf(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client))["id"]
    assert await active_leaf(client, cid) is None
    first = await say(client, cid, "one")
    second = await say(client, cid, "two")
    third = await reply(client, cid, "three", second["id"])
    assert (first["parent_id"], second["parent_id"]) == (None, first["id"])
    assert third["parent_id"] == second["id"]
    assert await active_leaf(client, cid) == third["id"]
    page = await history(client, cid)
    assert [m["seq"] for m in page] == [1, 2, 3]
    assert [m["siblings"] for m in page] == [{"index": 1, "count": 1}] * 3


async def test_an_edit_starts_a_branch_and_history_shows_the_active_path(
    client: httpx.AsyncClient,
) -> None:
    cid, m = await edited_conversation(client)
    assert m["u2'"]["parent_id"] == m["a1"]["id"]
    assert m["u2'"]["seq"] == 5
    assert await active_leaf(client, cid) == m["u2'"]["id"]
    active = await history(client, cid)
    assert [x["content"] for x in active] == ["u1", "a1", "u2'"]
    assert active[2]["siblings"] == {"index": 2, "count": 2}
    old = await history(client, cid, leaf=m["a2"]["id"])
    assert [x["content"] for x in old] == ["u1", "a1", "u2", "a2"]
    assert old[2]["siblings"] == {"index": 1, "count": 2}
    assert await contents(client, cid, leaf=m["a1"]["id"]) == ["u1", "a1"]
    everything = await history(client, cid, view="all")
    assert [x["seq"] for x in everything] == [1, 2, 3, 4, 5]


async def test_a_null_parent_id_starts_a_new_root(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    first = await say(client, cid, "first")
    await say(client, cid, "second")
    root = await say(client, cid, "first, edited", parent_id=None)
    assert root["parent_id"] is None
    page = await history(client, cid)
    assert [x["content"] for x in page] == ["first, edited"]
    assert page[0]["siblings"] == {"index": 2, "count": 2}
    assert await contents(client, cid, leaf=first["id"]) == ["first"]


async def test_putting_the_active_leaf_shows_the_newest_message_under_it_and_publishes(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    cid, m = await edited_conversation(client)
    switched = await client.put(
        f"/api/v1/conversations/{cid}/active-leaf", json={"message_id": m["u2"]["id"]}
    )
    assert switched.status_code == 200, switched.text
    assert switched.json()["active_leaf_id"] == m["a2"]["id"]
    assert await contents(client, cid) == ["u1", "a1", "u2", "a2"]
    events = await _event_types(redis, cid)
    assert events[-1] == (
        "conversation.branch_changed",
        {"conversation_id": cid, "active_leaf_id": m["a2"]["id"], "message_id": m["u2"]["id"]},
    )
    # Named at the fork point, the newest message anywhere under it wins: u2' (seq 5).
    back = await client.put(
        f"/api/v1/conversations/{cid}/active-leaf", json={"message_id": m["u1"]["id"]}
    )
    assert back.json()["active_leaf_id"] == m["u2'"]["id"]
    # Appending without parent_id continues the branch shown.
    await client.put(f"/api/v1/conversations/{cid}/active-leaf", json={"message_id": m["a2"]["id"]})
    u3 = await say(client, cid, "u3")
    assert u3["parent_id"] == m["a2"]["id"]
    assert await contents(client, cid) == ["u1", "a1", "u2", "a2", "u3"]


async def test_putting_the_current_leaf_again_publishes_nothing(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    cid, m = await edited_conversation(client)
    before = await _event_types(redis, cid)
    same = await client.put(
        f"/api/v1/conversations/{cid}/active-leaf", json={"message_id": m["u2'"]["id"]}
    )
    assert same.status_code == 200
    assert same.json()["active_leaf_id"] == m["u2'"]["id"]
    assert await _event_types(redis, cid) == before


async def test_siblings_lists_every_child_of_the_parent_in_creation_order(
    client: httpx.AsyncClient,
) -> None:
    cid, m = await edited_conversation(client)
    response = await client.get(f"{_messages(cid)}/{m['u2']['id']}/siblings")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [x["id"] for x in data] == [m["u2"]["id"], m["u2'"]["id"]]
    assert [x["siblings"] for x in data] == [{"index": 1, "count": 2}, {"index": 2, "count": 2}]
    only = (await client.get(f"{_messages(cid)}/{m['u1']['id']}/siblings")).json()["data"]
    assert [x["id"] for x in only] == [m["u1"]["id"]]


async def test_a_path_pages_by_cursor_across_branches_in_both_orders(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client))["id"]
    expected: list[str] = []
    parent = None
    # Five levels, each forking off the message before the newest: runs of two on the path.
    for level in range(5):
        a = await say(client, cid, f"{level}a", **({"parent_id": parent} if parent else {}))
        b = await say(client, cid, f"{level}b")
        await say(client, cid, f"{level}c")
        expected += [f"{level}a", f"{level}b"]
        parent = b["id"]
    assert a["content"] == "4a"
    leaf = (await history(client, cid))[-1]
    expected[-1] = "4b"
    expected.append("4c")
    assert leaf["content"] == "4c"
    for order, want in (("asc", expected), ("desc", expected[::-1])):
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 3, "order": order}
        while True:
            page = (await client.get(_messages(cid), params=params)).json()
            seen += [x["content"] for x in page["data"]]
            if not page["has_more"]:
                break
            params = {"limit": 3, "cursor": page["next_cursor"]}
        assert seen == want


async def test_a_cursor_keeps_paging_the_path_it_was_issued_for(
    client: httpx.AsyncClient,
) -> None:
    cid, m = await edited_conversation(client)
    first = (await client.get(_messages(cid), params={"limit": 2})).json()
    assert [x["content"] for x in first["data"]] == ["u1", "a1"]
    await client.put(f"/api/v1/conversations/{cid}/active-leaf", json={"message_id": m["a2"]["id"]})
    rest = (await client.get(_messages(cid), params={"cursor": first["next_cursor"]})).json()
    assert [x["content"] for x in rest["data"]] == ["u2'"]


async def test_two_appends_racing_on_one_parent_both_land_as_siblings(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    root = await say(client, cid, "root")
    parent = await say(client, cid, "parent")
    racers = await asyncio.gather(
        *(
            client.post(_messages(cid), json={"content": f"r{i}", "parent_id": parent["id"]})
            for i in range(10)
        ),
        *(client.post(_messages(cid), json={"content": f"d{i}"}) for i in range(10)),
    )
    assert [r.status_code for r in racers] == [201] * 20
    bodies = [r.json() for r in racers]
    assert sorted(b["seq"] for b in bodies) == list(range(3, 23))
    explicit = bodies[:10]
    assert {b["parent_id"] for b in explicit} == {parent["id"]}
    newest = max(bodies, key=lambda b: b["seq"])
    assert await active_leaf(client, cid) == newest["id"]
    # Every message's path is root → … → itself, each parent's seq below its child's.
    by_id = {b["id"]: b for b in [root, parent, *bodies]}
    for body in bodies:
        path = await history(client, cid, leaf=body["id"])
        assert path[0]["id"] == root["id"]
        assert path[-1]["id"] == body["id"]
        for before, after in itertools.pairwise(path):
            assert after["parent_id"] == before["id"]
            assert by_id[after["id"]]["seq"] > before["seq"]
    siblings = (await client.get(f"{_messages(cid)}/{explicit[0]['id']}/siblings")).json()
    assert len(siblings["data"]) >= 10
    async with engine.connect() as conn:
        last_seq = await conn.scalar(
            select(conversations_table.c.last_seq).where(conversations_table.c.id == uuid.UUID(cid))
        )
    assert last_seq == 22


async def _state(engine: AsyncEngine, cid: str) -> tuple[Any, ...]:
    async with engine.connect() as conn:
        conversation = (
            await conn.execute(
                select(
                    conversations_table.c.last_seq,
                    conversations_table.c.message_count,
                    conversations_table.c.active_leaf_id,
                ).where(conversations_table.c.id == uuid.UUID(cid))
            )
        ).one()
        rows = (
            await conn.execute(
                select(messages_table.c.id).where(
                    messages_table.c.conversation_id == uuid.UUID(cid)
                )
            )
        ).all()
    return (*conversation, len(rows))


async def test_a_parent_that_is_not_a_live_message_of_the_conversation_is_422_and_changes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    other = (await create_conversation(client))["id"]
    foreign = await say(client, other, "elsewhere")
    await say(client, cid, "mine")
    gone = await say(client, cid, "gone")
    assert (await client.delete(f"{_messages(cid)}/{gone['id']}")).status_code == 204
    before = await _state(engine, cid)
    for parent in (foreign["id"], str(uuid.uuid4()), gone["id"]):
        for url, body, headers in (
            (_messages(cid), {"content": "x", "parent_id": parent}, {}),
            (
                f"/internal/v1/conversations/{cid}/messages",
                {"role": "assistant", "content": "x", "parent_id": parent},
                SERVICE,
            ),
        ):
            response = await client.post(url, json=body, headers=headers)
            assert response.status_code == 422, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"].endswith("/unknown-message-reference")
    assert await _state(engine, cid) == before


async def test_branch_reads_and_switches_refuse_unknown_and_foreign_ids(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller, app: FastAPI
) -> None:
    cid, m = await edited_conversation(client)
    other = (await create_conversation(client))["id"]
    foreign = await say(client, other, "elsewhere")
    before = await _state(engine, cid)
    unknown = str(uuid.uuid4())
    put = f"/api/v1/conversations/{cid}/active-leaf"
    for message_id in (unknown, foreign["id"]):
        assert (await client.put(put, json={"message_id": message_id})).status_code == 422
        assert (await client.get(_messages(cid), params={"leaf": message_id})).status_code == 422
        assert (await client.get(f"{_messages(cid)}/{message_id}/siblings")).status_code == 404
    assert (await client.put(put, json={})).status_code == 422
    assert (await client.put(put, json={"message_id": "nope"})).status_code == 422
    intruder = new_caller(caller.tenant)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=intruder.headers
    ) as other_user:
        assert (await other_user.put(put, json={"message_id": m["u2"]["id"]})).status_code == 404
        siblings = await other_user.get(f"{_messages(cid)}/{m['u2']['id']}/siblings")
        assert siblings.status_code == 404
        assert (await other_user.get(_messages(cid), params={"view": "all"})).status_code == 404
    assert await _state(engine, cid) == before
    assert (await client.get(_messages(cid), params={"view": "sideways"})).status_code == 422


async def test_switching_branches_during_a_stream_keeps_the_reply_on_its_own_branch(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client))["id"]
    question = await say(client, cid, "question")
    streaming = await start_reply(client, cid, parent_id=question["id"])
    assert streaming["parent_id"] == question["id"]
    edited = await say(client, cid, "question, edited", parent_id=None)
    await post_deltas(client, cid, streaming["id"], [(0, "ans"), (1, "wer")])
    done = await complete(client, cid, streaming["id"])
    assert done["status"] == "completed"
    assert await active_leaf(client, cid) == edited["id"]
    assert await contents(client, cid) == ["question, edited"]
    assert await contents(client, cid, leaf=streaming["id"]) == ["question", "answer"]
