"""The OpenAI Agents SDK (``openai-agents``) keeps its session in this service.

A live server, ``OpenAIConversationsSession`` over the official ``openai`` client, and a scripted
model (no network): the run's tool calls and outputs are stored as items and read back by a
fresh session object on the same conversation.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

# openai-agents 0.24 declares websockets<17 and the dev extras pin websockets>=17.4, so
# ``make install`` puts it beside them with --no-deps (see the Makefile).
from agents import Agent, ModelSettings, Runner, Usage, function_tool, set_tracing_disabled
from agents.items import ModelResponse, TResponseInputItem
from agents.memory import OpenAIConversationsSession
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from tests.routes.test_openai_compat import Live, serve_live

pytestmark = pytest.mark.slow


class ScriptedModel(Model):
    """Answers from the input it is given: calls ``weather`` when asked about weather once."""

    async def get_response(  # type: ignore[override]
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        items = [input] if isinstance(input, str) else list(input)
        last = items[-1]
        text = last if isinstance(last, str) else last.get("content") or last.get("output")
        if isinstance(last, dict) and last.get("type") == "function_call_output":
            reply = f"tool said {last['output']}; history {len(items)}"
            return self._message(reply)
        if isinstance(text, str) and "weather" in text:
            call = ResponseFunctionToolCall(
                type="function_call",
                id=f"fc_{len(items)}",
                call_id=f"call_{len(items)}",
                name="weather",
                arguments=json.dumps({"city": "Paris"}),
                status="completed",
            )
            return ModelResponse(output=[call], usage=Usage(), response_id=None)
        return self._message(f"echo; history {len(items)}")

    @staticmethod
    def _message(text: str) -> ModelResponse:
        message = ResponseOutputMessage(
            id="msg_scripted",
            type="message",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


set_tracing_disabled(True)  # traces would go to api.openai.com: no network in the suite
AGENT = Agent(name="helper", model=ScriptedModel(), tools=[weather], model_settings=ModelSettings())


@pytest.fixture(scope="module")
def live(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """``conversation-service serve`` on the backend under test."""
    with serve_live(database_url, redis_url, tmp_path_factory.mktemp("openai-agents")) as server:
        yield server


async def test_agents_sdk_runs_tool_turns_on_a_session_stored_here(live: Live) -> None:
    async with live.async_sdk(live.issue_key().secret) as client:
        await _three_turns_then_a_fresh_session(client)


async def _three_turns_then_a_fresh_session(client: openai.AsyncOpenAI) -> None:
    session = OpenAIConversationsSession(openai_client=client)
    first = await Runner.run(AGENT, "hello", session=session)
    assert first.final_output == "echo; history 1"
    second = await Runner.run(AGENT, "what is the weather?", session=session)
    assert second.final_output.startswith("tool said sunny in Paris")
    third = await Runner.run(AGENT, "thanks", session=session)
    assert third.final_output.startswith("echo; history")

    fresh = OpenAIConversationsSession(conversation_id=session.session_id, openai_client=client)
    history = await fresh.get_items()
    kinds = [item.get("type", "message") for item in history]
    assert kinds == [
        "message",
        "message",  # hello / echo
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
        "message",
    ]
    assert history[3]["call_id"] == history[4]["call_id"]
    fourth = await Runner.run(AGENT, "again", session=fresh)
    assert fourth.final_output == f"echo; history {len(history) + 1}"

    popped = await fresh.pop_item()
    assert popped is not None
    assert popped["content"][0]["text"] == fourth.final_output
    assert len(await fresh.get_items()) == len(history) + 1
    await fresh.clear_session()
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(session.session_id)


async def test_two_agent_runs_on_two_conversations_at_once(live: Live) -> None:
    async with live.async_sdk(live.issue_key().secret) as client:
        await _two_runs_at_once(client)


async def _two_runs_at_once(client: openai.AsyncOpenAI) -> None:
    sessions = [OpenAIConversationsSession(openai_client=client) for _ in range(2)]
    results = await asyncio.gather(
        *(Runner.run(AGENT, "what is the weather?", session=s) for s in sessions)
    )
    assert all(r.final_output.startswith("tool said sunny") for r in results)
    ids = {s.session_id for s in sessions}
    assert len(ids) == 2
    for s in sessions:
        assert [i.get("type", "message") for i in await s.get_items()] == [
            "message",
            "function_call",
            "function_call_output",
            "message",
        ]
