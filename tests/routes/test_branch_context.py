"""The context window follows the message tree: the active path, ``?leaf=``, summaries by path."""

import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.models.message import Role
from conversation_service.services import summaries
from tests.conftest import Caller, create_conversation
from tests.routes.test_branches import edited_conversation, reply, say
from tests.routes.test_context import SERVICE, append, context


async def test_the_window_holds_the_active_path_or_the_path_to_leaf(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    cid, m = await edited_conversation(client)
    window = await context(client, cid)
    assert [x["content"] for x in window["messages"]] == ["u1", "a1", "u2'"]
    old = await context(client, cid, leaf=m["a2"]["id"])
    assert [x["content"] for x in old["messages"]] == ["u1", "a1", "u2", "a2"]
    openai = await context(client, cid, leaf=m["a2"]["id"], format="openai")
    assert [x["content"] for x in openai["messages"]] == ["u1", "a1", "u2", "a2"]
    await client.put(f"/api/v1/conversations/{cid}/active-leaf", json={"message_id": m["a2"]["id"]})
    switched = await context(client, cid)
    assert [x["content"] for x in switched["messages"]] == ["u1", "a1", "u2", "a2"]


async def test_pinned_messages_of_another_branch_stay_out_of_the_window(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client))["id"]
    first = await say(client, cid, "first")
    pinned = await client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "remember this", "metadata": {"pinned": True}},
    )
    assert pinned.status_code == 201
    await say(client, cid, "other branch", parent_id=first["id"])
    window = await context(client, cid)
    assert [x["content"] for x in window["messages"]] == ["first", "other branch"]


async def test_a_leaf_that_is_not_a_live_message_of_the_conversation_is_422(
    client: httpx.AsyncClient,
) -> None:
    cid, _ = await edited_conversation(client)
    other = (await create_conversation(client))["id"]
    foreign = await say(client, other, "elsewhere")
    for leaf in (foreign["id"], str(uuid.uuid4())):
        response = await client.get(
            f"/internal/v1/conversations/{cid}/context", params={"leaf": leaf}, headers=SERVICE
        )
        assert response.status_code == 422, response.text
        assert response.json()["type"].endswith("/unknown-message-reference")


async def test_a_summary_counts_only_on_a_path_through_its_last_message(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    await append(engine, caller, cid, Role.SYSTEM, "Be brief.")
    turns = [await say(client, cid, f"turn {i}") for i in range(6)]
    # Summary up to seq 5 ("turn 3") of the line, then an edit of "turn 2" (seq 4).
    async with engine.begin() as conn:
        await summaries.add_summary(
            conn,
            conversation_id=uuid.UUID(cid),
            tenant_id=caller.tenant,
            content="The user counted turns.",
            covers_until_seq=5,
            method="test",
        )
    on_line = await context(client, cid)
    assert on_line["summary"]["covers_until_seq"] == 5
    assert [x["content"] for x in on_line["messages"]] == ["Be brief.", "turn 4", "turn 5"]
    edited = await say(client, cid, "turn 2, edited", parent_id=turns[1]["id"])
    window = await context(client, cid)
    assert window["summary"] is None
    assert [x["content"] for x in window["messages"]] == [
        "Be brief.",
        "turn 0",
        "turn 1",
        "turn 2, edited",
    ]
    back = await context(client, cid, leaf=turns[-1]["id"])
    assert back["summary"]["covers_until_seq"] == 5
    assert edited["seq"] == 8


async def test_a_reply_to_an_earlier_message_answers_from_that_path(
    client: httpx.AsyncClient,
) -> None:
    cid, m = await edited_conversation(client)
    # The orchestrator answers u2 again (a regenerated reply): a sibling of a2.
    again = await reply(client, cid, "a2, again", m["u2"]["id"])
    assert again["parent_id"] == m["u2"]["id"]
    window = await context(client, cid)
    assert [x["content"] for x in window["messages"]] == ["u1", "a1", "u2", "a2, again"]
