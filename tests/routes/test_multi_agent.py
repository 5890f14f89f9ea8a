"""Who spoke: every assistant and tool message records its agent, and the context shows it."""

from typing import Any

import httpx

from tests.conftest import create_conversation
from tests.websocket.helpers import SERVICE


async def agent_message(
    client: httpx.AsyncClient, cid: str, content: str, **body: Any
) -> dict[str, Any]:
    """The orchestrator writes a completed message (assistant unless ``role`` says otherwise)."""
    response = await client.post(
        f"/internal/v1/conversations/{cid}/messages",
        json={"role": "assistant", "content": content, **body},
        headers=SERVICE,
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_assistant_and_tool_messages_default_to_the_conversations_agent(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    user = await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    reply = await agent_message(client, cid, "hello")
    tool = await agent_message(client, cid, "42", role="tool")
    system = await agent_message(client, cid, "be brief", role="system")
    assert user.json()["agent_id"] is None
    assert (reply["agent_id"], tool["agent_id"], system["agent_id"]) == (
        "demo-assistant",
        "demo-assistant",
        None,
    )
    history = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()["data"]
    assert [m["agent_id"] for m in history] == [None, "demo-assistant", "demo-assistant", None]


async def test_an_agent_id_given_by_the_orchestrator_is_recorded_as_the_author(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    reply = await agent_message(client, cid, "I checked the order", agent_id="billing-agent")
    assert reply["agent_id"] == "billing-agent"
    stored = (await client.get(f"/api/v1/conversations/{cid}/messages/{reply['id']}")).json()
    assert stored["agent_id"] == "billing-agent"


async def test_an_invalid_agent_id_is_refused(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    response = await client.post(
        f"/internal/v1/conversations/{cid}/messages",
        json={"role": "assistant", "content": "x", "agent_id": "a\x00b"},
        headers=SERVICE,
    )
    assert response.status_code == 422


async def test_openai_context_names_each_assistant_message_after_its_agent(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    await agent_message(client, cid, "hello")
    await agent_message(client, cid, "billing here", agent_id="billing agent/eu")
    context = await client.get(
        f"/internal/v1/conversations/{cid}/context", params={"format": "openai"}, headers=SERVICE
    )
    assert context.status_code == 200, context.text
    chat = context.json()["messages"]
    assert [(m["role"], m["name"]) for m in chat] == [
        ("user", None),
        ("assistant", "demo-assistant"),
        ("assistant", "billing_agent_eu"),  # characters chat-completions refuses become _
    ]


async def test_for_agent_renders_other_agents_messages_as_quoted_user_messages(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "help"})
    await agent_message(
        client, cid, "", metadata={"tool_calls": [{"id": "c1", "type": "function"}]}
    )
    await agent_message(
        client, cid, "order 7 shipped", role="tool", metadata={"tool_call_id": "c1"}
    )
    await agent_message(client, cid, "It shipped.")
    await agent_message(client, cid, "Support here.", agent_id="support-agent")
    url = f"/internal/v1/conversations/{cid}/context"
    mine = await client.get(
        url, params={"format": "openai", "for_agent": "support-agent"}, headers=SERVICE
    )
    assert mine.status_code == 200, mine.text
    chat = mine.json()["messages"]
    assert [(m["role"], m["name"], m["content"]) for m in chat] == [
        ("user", None, "help"),
        ("user", "demo-assistant", "[demo-assistant]: "),
        ("user", "demo-assistant", "[demo-assistant tool result]: order 7 shipped"),
        ("user", "demo-assistant", "[demo-assistant]: It shipped."),
        ("assistant", "support-agent", "Support here."),
    ]
    assert all(m["tool_calls"] is None and m["tool_call_id"] is None for m in chat)
    theirs = await client.get(
        url, params={"format": "openai", "for_agent": "demo-assistant"}, headers=SERVICE
    )
    roles = [m["role"] for m in theirs.json()["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]


async def test_an_orchestrators_tool_call_keeps_the_words_said_beside_it_in_the_openai_context(
    client: httpx.AsyncClient,
) -> None:
    # Only a /v1 call item's content (its arguments again) is left out; this text is a reply.
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "order 7?"})
    call = {"id": "c1", "type": "function", "function": {"name": "order", "arguments": "{}"}}
    await agent_message(client, cid, "Let me check.", metadata={"tool_calls": [call]})
    context = await client.get(
        f"/internal/v1/conversations/{cid}/context", params={"format": "openai"}, headers=SERVICE
    )
    assert context.status_code == 200, context.text
    said = context.json()["messages"][1]
    assert (said["content"], said["tool_calls"]) == ("Let me check.", [call])
