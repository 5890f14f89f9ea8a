"""Mapping between the store and OpenAI's shapes: ids, roles, parts and statuses."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from conversation_service.errors import ConversationNotFoundError
from conversation_service.models.message import MessageOut, MessageStatus, Role
from conversation_service.services import openai_items


def stored(role: Role, content: str, **fields: Any) -> MessageOut:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "conversation_id": uuid.uuid4(),
        "seq": 1,
        "role": role,
        "content": content,
        "content_parts": None,
        "status": MessageStatus.COMPLETED,
        "metadata": {},
        "token_count": None,
        "language": None,
        "sentiment": None,
        "parent_id": None,
        "created_at": now,
        "updated_at": now,
    }
    values.update(fields)
    return MessageOut(**values)


def test_ids_map_both_ways() -> None:
    ours = uuid.uuid4()
    public = openai_items.conversation_public_id(ours)
    assert public == f"conv_{ours.hex}"
    assert openai_items.parse_conversation_id(public) == ours
    assert openai_items.item_public_id(ours) == f"msg_{ours.hex}"


@pytest.mark.parametrize(
    "public",
    [
        "",
        "conv_",
        "conv_" + "0" * 31,
        "conv_" + "A" * 32,
        "msg_" + "0" * 32,
        str(uuid.UUID(int=0)),
        "conv_" + "0" * 32 + "0",
    ],
)
def test_other_ids_name_no_conversation(public: str) -> None:
    with pytest.raises(ConversationNotFoundError):
        openai_items.parse_conversation_id(public)


@pytest.mark.parametrize("status", list(MessageStatus))
def test_every_message_status_has_an_item_status(status: MessageStatus) -> None:
    item = openai_items.render_item(stored(Role.USER, "x", status=status))
    assert item.status in ("in_progress", "completed", "incomplete")


def test_messages_written_elsewhere_read_as_one_text_part() -> None:
    assistant = openai_items.render_item(
        stored(Role.ASSISTANT, "Hi", content_parts=[{"type": "text", "text": "Hi"}])
    )
    assert assistant.role == "assistant"
    assert assistant.content == [{"type": "output_text", "text": "Hi", "annotations": []}]
    tool = openai_items.render_item(stored(Role.TOOL, '{"temp": 21}'))
    assert (tool.role, tool.content) == ("tool", [{"type": "input_text", "text": '{"temp": 21}'}])
    system = openai_items.render_item(stored(Role.SYSTEM, "Be kind"))
    assert system.role == "system"


def test_developer_round_trips_through_a_system_message() -> None:
    developer = openai_items.render_item(
        stored(Role.SYSTEM, "Be brief", metadata={"openai_role": "developer"})
    )
    assert developer.role == "developer"
