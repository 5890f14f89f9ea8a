"""LangChain: ``ConversationServiceChatMessageHistory`` keeps a runnable's history in a live
service (sync and async), tool calls and tool results included."""

from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from conversation_service_client import AsyncConversationServiceClient, ConversationServiceClient
from conversation_service_client.langchain import ConversationServiceChatMessageHistory

pytestmark = pytest.mark.slow


class CountingChatModel(BaseChatModel):
    """A fake chat model: answers with how many messages it was given and the last one."""

    @property
    def _llm_type(self) -> str:
        return "counting-fake"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = AIMessage(f"saw {len(messages)}: {messages[-1].content}")
        return ChatResult(generations=[ChatGeneration(message=reply)])


# The issue asks for RunnableWithMessageHistory, which langchain-core 1.x deprecates in favour of
# LangGraph's persistence; it still works and is what most LangChain code in the field uses.
@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_runnable_with_message_history_keeps_three_turns_in_the_service(
    client: ConversationServiceClient, aclient: AsyncConversationServiceClient, mode: str
) -> None:
    conversation = client.create_conversation(agent_id="agent-1")
    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{question}")]
    )

    def history_of(session_id: str) -> ConversationServiceChatMessageHistory:
        if mode == "sync":
            return ConversationServiceChatMessageHistory(session_id, client=client)
        return ConversationServiceChatMessageHistory(session_id, async_client=aclient)

    chain = RunnableWithMessageHistory(
        prompt | CountingChatModel(),
        history_of,
        input_messages_key="question",
        history_messages_key="history",
    )
    config: Any = {"configurable": {"session_id": str(conversation.id)}}
    answers = []
    for question in ("hi, I am Ada", "what is my name?", "thanks"):
        if mode == "sync":
            answer = chain.invoke({"question": question}, config=config)
        else:
            answer = await chain.ainvoke({"question": question}, config=config)
        answers.append(answer.content)

    # Each turn saw the turns before it, read back from the service.
    assert answers == ["saw 1: hi, I am Ada", "saw 3: what is my name?", "saw 5: thanks"]
    stored = [(m.role, m.content) for m in client.iter_messages(conversation.id)]
    assert stored == [
        ("user", "hi, I am Ada"),
        ("assistant", "saw 1: hi, I am Ada"),
        ("user", "what is my name?"),
        ("assistant", "saw 3: what is my name?"),
        ("user", "thanks"),
        ("assistant", "saw 5: thanks"),
    ]


async def test_tool_calls_and_tool_messages_round_trip(
    client: ConversationServiceClient, aclient: AsyncConversationServiceClient
) -> None:
    conversation = client.create_conversation(agent_id="agent-1")
    call = {"name": "weather", "args": {"city": "Paris", "days": 2}, "id": "call_1"}
    written: list[BaseMessage] = [
        SystemMessage("You are terse."),
        HumanMessage("Weather in Paris?"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("sunny, 24C", tool_call_id="call_1", name="weather"),
        ToolMessage("no rain data", tool_call_id="call_1", status="error"),
        AIMessage("Sunny and 24C."),
    ]
    ConversationServiceChatMessageHistory(conversation.id, client=client).add_messages(written[:3])
    await ConversationServiceChatMessageHistory(
        conversation.id, async_client=aclient
    ).aadd_messages(written[3:])

    read_sync = ConversationServiceChatMessageHistory(conversation.id, client=client).messages
    read_async = await ConversationServiceChatMessageHistory(
        conversation.id, async_client=aclient
    ).aget_messages()
    for read in (read_sync, read_async):
        assert [type(m) for m in read] == [type(m) for m in written]
        assert [m.content for m in read] == [m.content for m in written]
        ai_call = read[2]
        assert isinstance(ai_call, AIMessage)
        assert [(c["name"], c["args"], c["id"]) for c in ai_call.tool_calls] == [
            ("weather", {"city": "Paris", "days": 2}, "call_1")
        ]
        result, failure = read[3], read[4]
        assert isinstance(result, ToolMessage)
        assert isinstance(failure, ToolMessage)
        assert (result.tool_call_id, result.name, result.status) == ("call_1", "weather", "success")
        assert (failure.tool_call_id, failure.status) == ("call_1", "error")
    # The service's OpenAI-shaped window links the call and its results the same way.
    window = await aclient.openai_context_window(conversation.id)
    calls = [m.tool_calls for m in window.messages if m.tool_calls]
    assert calls[0][0]["id"] == "call_1"
    assert [m.tool_call_id for m in window.messages if m.role == "tool"] == ["call_1", "call_1"]


def test_clearing_the_history_deletes_its_messages(client: ConversationServiceClient) -> None:
    conversation = client.create_conversation(agent_id="agent-1")
    history = ConversationServiceChatMessageHistory(conversation.id, client=client)
    history.add_messages([HumanMessage("one"), AIMessage("two")])
    history.clear()
    assert history.messages == []
