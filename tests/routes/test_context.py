"""The context endpoint: strategies, always-included messages, tool pairs, summary, formats."""

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.models.message import Role
from conversation_service.services import message_store, summaries
from conversation_service.services.auth import Principal
from conversation_service.services.message_store import MessageDraft
from conversation_service.utils.memory_utils import REPLY_PRIMING_TOKENS, message_tokens
from tests.conftest import INTERNAL_KEY, Caller, create_conversation

SERVICE = {"Authorization": f"Bearer {INTERNAL_KEY}"}


async def append(
    engine: AsyncEngine,
    caller: Caller,
    cid: str,
    role: Role,
    content: str,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    principal = Principal(tenant_id=caller.tenant, user_id=caller.user)
    async with engine.begin() as conn:
        result = await message_store.insert_message(
            conn,
            principal,
            uuid.UUID(cid),
            MessageDraft(role=role, content=content, metadata=metadata or {}),
        )
    return result.message


async def context(client: httpx.AsyncClient, cid: str, **params: Any) -> dict[str, Any]:
    response = await client.get(
        f"/internal/v1/conversations/{cid}/context", params=params, headers=SERVICE
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_token_counts_are_exact_and_stored(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    text = "¿Dónde está la estación de tren? I need to catch the 9:15 to Sevilla."
    message = (
        await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": text})
    ).json()
    assert message["token_count"] == message_tokens("user", text, "o200k_base")
    window = await context(client, cid, encoding="cl100k_base", strategy="token_budget")
    assert (
        window["token_count"] == message_tokens("user", text, "cl100k_base") + REPLY_PRIMING_TOKENS
    )
    window = await context(client, cid, encoding="o200k_base", strategy="token_budget")
    assert (
        window["token_count"] == message_tokens("user", text, "o200k_base") + REPLY_PRIMING_TOKENS
    )


async def test_token_budget_keeps_newest_that_fit_and_reports_cut(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client))["id"]
    for i in range(30):
        await client.post(
            f"/api/v1/conversations/{cid}/messages", json={"content": f"message number {i} " * 5}
        )
    per_message = message_tokens("user", "message number 0 " * 5, "o200k_base")
    budget = 10 * per_message + REPLY_PRIMING_TOKENS + 2
    window = await context(client, cid, strategy="token_budget", max_tokens=budget)
    seqs = [m["seq"] for m in window["messages"]]
    assert seqs == list(range(21, 31))
    assert window["truncated"] is True
    assert window["cut_seq"] == 20
    assert window["token_count"] <= budget
    assert window["budget"] == budget
    last_n = await context(client, cid, strategy="last_n", last_n=3)
    assert [m["seq"] for m in last_n["messages"]] == [28, 29, 30]
    assert last_n["cut_seq"] == 27
    everything = await context(client, cid, strategy="token_budget", max_tokens=100_000)
    assert len(everything["messages"]) == 30
    assert everything["truncated"] is False
    assert everything["cut_seq"] is None


async def test_system_and_pinned_always_included_and_deleted_never(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    system = await append(engine, caller, cid, Role.SYSTEM, "You are a travel agent.")
    pinned = (
        await client.post(
            f"/api/v1/conversations/{cid}/messages",
            json={"content": "My passport number is X123", "metadata": {"pinned": True}},
        )
    ).json()
    doomed = (
        await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "oops"})
    ).json()
    for i in range(40):
        await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": f"chat {i}"})
    await client.delete(f"/api/v1/conversations/{cid}/messages/{doomed['id']}")
    window = await context(client, cid, strategy="last_n", last_n=5)
    seqs = [m["seq"] for m in window["messages"]]
    assert seqs[:2] == [system["seq"], pinned["seq"]]
    assert len(seqs) == 7
    assert doomed["seq"] not in seqs
    # Unpinning takes it out of the window.
    await client.patch(
        f"/api/v1/conversations/{cid}/messages/{pinned['id']}", json={"metadata": {"pinned": None}}
    )
    window = await context(client, cid, strategy="last_n", last_n=5)
    assert pinned["seq"] not in [m["seq"] for m in window["messages"]]
    deleted_everywhere = await context(client, cid, strategy="token_budget", max_tokens=100_000)
    assert doomed["seq"] not in [m["seq"] for m in deleted_everywhere["messages"]]


async def test_tool_call_and_result_are_never_separated(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "weather?"})
    call = await append(
        engine,
        caller,
        cid,
        Role.ASSISTANT,
        "",
        {"tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather"}}]},
    )
    result = await append(
        engine, caller, cid, Role.TOOL, "sunny, 24C " * 20, {"tool_call_id": "call_1"}
    )
    answer = await append(engine, caller, cid, Role.ASSISTANT, "It is sunny.")
    tail = message_tokens("assistant", "It is sunny.", "o200k_base")
    # Room for the answer and the tool result, but not the call: the result must go too.
    budget = tail + result["token_count"] + REPLY_PRIMING_TOKENS + 1
    window = await context(client, cid, strategy="token_budget", max_tokens=budget)
    assert [m["seq"] for m in window["messages"]] == [answer["seq"]]
    assert window["cut_seq"] == result["seq"]
    roomy = await context(client, cid, strategy="token_budget", max_tokens=10_000, format="openai")
    roles = [m["role"] for m in roomy["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert roomy["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert roomy["messages"][2]["tool_call_id"] == "call_1"
    assert call["seq"] == 2


async def test_summary_buffer_uses_newest_summary_and_messages_after_it(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    system = await append(engine, caller, cid, Role.SYSTEM, "Be brief.")
    for i in range(10):
        await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": f"turn {i}"})
    async with engine.begin() as conn:
        for version, until in ((1, 4), (2, 8)):
            await summaries.add_summary(
                conn,
                conversation_id=uuid.UUID(cid),
                tenant_id=caller.tenant,
                content=f"The user said turns up to {until} (v{version}).",
                covers_until_seq=until,
                method="test",
            )
    window = await context(client, cid)  # the default strategy is summary_buffer
    assert window["strategy"] == "summary_buffer"
    assert window["summary"]["version"] == 2
    assert window["summary"]["covers_until_seq"] == 8
    assert [m["seq"] for m in window["messages"]] == [system["seq"], 9, 10, 11]
    assert window["truncated"] is False
    openai = await context(client, cid, format="openai")
    assert [m["role"] for m in openai["messages"]] == ["system", "system", "user", "user", "user"]
    assert openai["messages"][1]["content"].endswith("turns up to 8 (v2).")
    public = (await client.get(f"/api/v1/conversations/{cid}/summary")).json()
    assert public["version"] == 2


async def test_policy_stored_on_conversation_and_overridable(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client, memory_policy={"strategy": "last_n", "last_n": 2}))[
        "id"
    ]
    for i in range(5):
        await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": f"m{i}"})
    window = await context(client, cid)
    assert window["strategy"] == "last_n"
    assert [m["seq"] for m in window["messages"]] == [4, 5]
    override = await context(client, cid, last_n=4)
    assert [m["seq"] for m in override["messages"]] == [2, 3, 4, 5]


@pytest.mark.parametrize(
    "params",
    [
        {"strategy": "everything"},
        {"max_tokens": 0},
        {"last_n": 0},
        {"encoding": "gpt2"},
        {"format": "xml"},
    ],
)
async def test_bad_parameters_are_422(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    cid = (await create_conversation(client))["id"]
    response = await client.get(
        f"/internal/v1/conversations/{cid}/context", params=params, headers=SERVICE
    )
    assert response.status_code == 422


async def test_budget_smaller_than_required_messages_is_422(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    await append(engine, caller, cid, Role.SYSTEM, "A long system prompt. " * 50)
    response = await client.get(
        f"/internal/v1/conversations/{cid}/context", params={"max_tokens": 20}, headers=SERVICE
    )
    assert response.status_code == 422
    assert "max_tokens" in response.json()["detail"]


async def test_context_includes_session_and_tracked_context(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    session = (await client.get(f"/api/v1/conversations/{cid}/sessions/current")).json()
    await client.patch(
        f"/internal/v1/sessions/{session['id']}/context",
        json={"variables": {"tz": "Europe/Madrid"}},
        headers=SERVICE,
    )
    await client.patch(
        f"/internal/v1/conversations/{cid}/tracked-context",
        json={"intent": "greet"},
        headers=SERVICE,
    )
    window = await context(client, cid)
    assert window["session_id"] == session["id"]
    assert window["session_context"] == {"tz": "Europe/Madrid"}
    assert window["tracked_context"] == {"intent": "greet"}


async def test_unknown_conversation_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(
        f"/internal/v1/conversations/{uuid.uuid4()}/context", headers=SERVICE
    )
    assert response.status_code == 404
