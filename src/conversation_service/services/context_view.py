"""The ``format=openai`` view of a context window, and how it shows who spoke.

Every assistant message carries ``name``: the agent that wrote it (its ``agent_id`` with every
character outside ``[A-Za-z0-9_-]`` replaced by ``_``, at most 64, as chat-completions accepts),
so a model sees which agent said what. An assistant message that stands for a ``/v1`` call item
(``function_call``, ``custom_tool_call``, …) has empty ``content``: its stored text is the call's
arguments, which ``tool_calls`` already carries. An orchestrator's assistant message with
``tool_calls`` keeps its text (words said beside the call).

``for_agent`` renders the window for one agent (decision, the one rendering offered): that agent's
own assistant and tool messages (and those with no recorded agent) stay its turns; the other
agents' are context, not turns it took:
- another agent's assistant message becomes a ``user`` message named after that agent, with the
  content prefixed ``[<agent_id>]: ``; its tool calls are left out (the model cannot answer them);
- another agent's tool result becomes a ``user`` message prefixed ``[<agent_id> tool result]: ``.
``user`` rather than ``system``: a peer agent's words are input to weigh, not instructions. The
window's token count is the stored one; the prefixes add a few tokens it does not include.
"""

import re
from typing import Any

from conversation_service.services import summaries
from conversation_service.services.openai_tool_items import ITEM_KEY

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

_OPENAI_HEAD = (
    "conversation_id",
    "strategy",
    "encoding",
    "budget",
    "token_count",
    "truncated",
    "cut_seq",
)


def chat_name(agent_id: str) -> str:
    """An agent id as a chat-completions ``name``."""
    return _NAME_UNSAFE.sub("_", agent_id)[:64]


def openai_view(window: dict[str, Any], *, for_agent: str | None = None) -> dict[str, Any]:
    """A context window as chat-completions messages (``OpenAIContext``): the summary joins the
    leading system block, never the middle."""
    chat = [_chat_message(message, for_agent) for message in window["messages"]]
    summary = window["summary"]
    if summary is not None:
        leading = next((i for i, m in enumerate(chat) if m["role"] != "system"), len(chat))
        chat.insert(
            leading,
            {
                "role": "system",
                "content": summaries.SUMMARY_PREFIX + summary["text"],
                "name": None,
                "tool_call_id": None,
                "tool_calls": None,
            },
        )
    head = {key: window[key] for key in _OPENAI_HEAD}
    return {**head, "messages": chat}


def _chat_message(message: dict[str, Any], for_agent: str | None) -> dict[str, Any]:
    metadata = message["metadata"] or {}
    role = message["role"]
    agent = message.get("agent_id")
    if for_agent is not None and agent is not None and agent != for_agent:
        label = f"[{agent}]" if role == "assistant" else f"[{agent} tool result]"
        return {
            "role": "user",
            "content": f"{label}: {message['content']}",
            "name": chat_name(agent),
            "tool_call_id": None,
            "tool_calls": None,
        }
    tool_calls = metadata.get("tool_calls") if role == "assistant" else None
    content = message["content"]
    if tool_calls and isinstance(metadata.get(ITEM_KEY), dict):
        # A /v1 call item's stored text is its arguments (what its tokens count); the call
        # already carries them, and a model must not read them again as words it said.
        content = ""
    return {
        "role": role,
        "content": content,
        "name": chat_name(agent) if role == "assistant" and agent else None,
        "tool_call_id": metadata.get("tool_call_id") if role == "tool" else None,
        "tool_calls": tool_calls,
    }
