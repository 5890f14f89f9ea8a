"""Every OpenAI conversation item type, through the official SDK against a live server.

Each returned item is validated with the SDK's own pydantic model of its type (no extra fields,
so a renamed field fails), and the history seen through ``/api/v1`` and the context window
(``format=openai``) holds the tool calls as assistant ``tool_calls`` and the outputs as ``tool``
messages.
"""

import typing
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai import OpenAI
from openai.types.conversations.conversation_item import ConversationItem

from conversation_service.services.auth import issue_token
from tests.conftest import INTERNAL_KEY, JWT_SECRET
from tests.routes.test_openai_compat import Key, Live, serve_live

pytestmark = pytest.mark.slow

SDK_MODELS: dict[str, type[openai.BaseModel]] = {
    typing.get_args(model.model_fields["type"].annotation)[0]: model
    for model in typing.get_args(typing.get_args(ConversationItem)[0])
}
SCREENSHOT = {"type": "computer_screenshot", "image_url": "data:image/png;base64,AA=="}
TOOL = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
# One item of every type the SDK defines, in an order where each output follows its call.
EVERY_ITEM: list[dict[str, Any]] = [
    {"type": "message", "id": "msg_client_1", "role": "user", "content": "weather?"},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}],
     "encrypted_content": "gAAAA-secret"},
    {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
     "arguments": '{"city": "Paris"}'},
    {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "sunny"},
    {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_2", "name": "grep",
     "input": "needle"},
    {"type": "custom_tool_call_output", "id": "ctco_1", "call_id": "call_2", "output": "found"},
    {"type": "file_search_call", "id": "fs_1", "queries": ["q"], "status": "completed",
     "results": [{"file_id": "file_1", "text": "t", "score": 0.5}]},
    {"type": "web_search_call", "id": "ws_1", "status": "completed",
     "action": {"type": "search", "query": "q", "sources": [{"type": "url", "url": "https://e.x"}]}},
    {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "aGk="},
    {"type": "computer_call", "id": "cu_1", "call_id": "call_3", "status": "completed",
     "action": {"type": "click", "button": "left", "x": 1, "y": 2}, "pending_safety_checks": []},
    {"type": "computer_call_output", "id": "cuo_1", "call_id": "call_3", "output": SCREENSHOT},
    {"type": "tool_search_call", "id": "tsc_1", "arguments": {"q": "x"}, "execution": "client",
     "status": "completed", "call_id": "call_4"},
    {"type": "tool_search_output", "id": "tso_1", "execution": "client", "status": "completed",
     "tools": [TOOL], "call_id": "call_4"},
    {"type": "additional_tools", "id": "at_1", "role": "developer", "tools": [TOOL]},
    {"type": "configuration_update", "id": "cfg_1", "reasoning": {"effort": "low"}},
    {"type": "program", "id": "pg_1", "call_id": "call_5", "code": "1+1", "fingerprint": "fp"},
    {"type": "program_output", "id": "pgo_1", "call_id": "call_5", "result": "2",
     "status": "completed"},
    {"type": "compaction", "id": "cmp_1", "encrypted_content": "opaque"},
    {"type": "code_interpreter_call", "id": "ci_1", "container_id": "cntr_1", "code": "1",
     "status": "completed", "outputs": [{"type": "logs", "logs": "1"}]},
    {"type": "local_shell_call", "id": "ls_1", "call_id": "call_6", "status": "completed",
     "action": {"type": "exec", "command": ["ls"], "env": {}}},
    {"type": "local_shell_call_output", "id": "call_6", "output": '{"stdout": "a"}'},
    {"type": "shell_call", "id": "sh_1", "call_id": "call_7", "status": "completed",
     "action": {"commands": ["ls"]}},
    {"type": "shell_call_output", "id": "sho_1", "call_id": "call_7", "status": "completed",
     "output": [{"outcome": {"type": "exit", "exit_code": 0}, "stdout": "a", "stderr": ""}]},
    {"type": "apply_patch_call", "id": "ap_1", "call_id": "call_8", "status": "completed",
     "operation": {"type": "delete_file", "path": "a.txt"}},
    {"type": "apply_patch_call_output", "id": "apo_1", "call_id": "call_8", "status": "completed"},
    {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "s",
     "tools": [{"name": "t", "input_schema": {"type": "object"}}]},
    {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "s", "name": "t",
     "arguments": "{}"},
    {"type": "mcp_approval_response", "id": "mcpa_1", "approval_request_id": "mcpr_1",
     "approve": True},
    {"type": "mcp_call", "id": "mcp_1", "server_label": "s", "name": "t", "arguments": "{}",
     "output": "ok", "status": "completed"},
]  # fmt: skip
# What ``include`` hides unless asked, by type.
HIDDEN = {
    "reasoning": "reasoning.encrypted_content",
    "file_search_call": "file_search_call.results",
    "web_search_call": "web_search_call.action.sources",
    "code_interpreter_call": "code_interpreter_call.outputs",
    "computer_call_output": "computer_call_output.output.image_url",
}


@pytest.fixture(scope="module")
def live(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """``conversation-service serve`` on the backend under test."""
    with serve_live(database_url, redis_url, tmp_path_factory.mktemp("openai-items")) as server:
        yield server


@pytest.fixture(scope="module")
def owner(live: Live) -> Key:
    return live.issue_key()


@pytest.fixture
def sdk(live: Live, owner: Key) -> Iterator[OpenAI]:
    with live.sdk(owner.secret) as client:
        yield client


def raw_items(sdk: OpenAI, conversation_id: str, **query: Any) -> list[dict[str, Any]]:
    response = sdk.conversations.items.with_raw_response.list(conversation_id, limit=100, **query)
    data: list[dict[str, Any]] = response.http_response.json()["data"]
    return data


def sdk_model(raw: dict[str, Any]) -> openai.BaseModel:
    """The item validated by the SDK's model of its type, with nothing left over."""
    model = SDK_MODELS[raw["type"]].model_validate(raw)
    assert not model.model_extra, (raw["type"], model.model_extra)
    return model


def test_the_sample_covers_every_item_type_of_the_sdk() -> None:
    assert {item["type"] for item in EVERY_ITEM} == set(SDK_MODELS)


def test_every_item_type_round_trips_through_the_sdk_models(sdk: OpenAI) -> None:
    conversation = sdk.conversations.create()
    added = sdk.conversations.items.create(conversation.id, items=EVERY_ITEM[:20])
    assert [item.id for item in added.data] == [item["id"] for item in EVERY_ITEM[:20]]
    sdk.conversations.items.create(conversation.id, items=EVERY_ITEM[20:])
    include = list(HIDDEN.values())
    stored = raw_items(sdk, conversation.id, order="asc", include=include)
    assert [item["id"] for item in stored] == [item["id"] for item in EVERY_ITEM]
    for sent, got in zip(EVERY_ITEM, stored, strict=True):
        sdk_model(got)
        if sent["type"] != "message":
            assert {key: got[key] for key in sent} == sent
            assert set(got) - set(sent) <= {"status"}
    for item in EVERY_ITEM:
        one = sdk.conversations.items.retrieve(item["id"], conversation_id=conversation.id)
        assert one.type == item["type"]


def test_each_listed_item_matches_exactly_one_schema_of_the_openapi_document(live: Live) -> None:
    # Schemathesis found a message item valid under both oneOf branches (message and opaque).
    # A key of its own: its 29 items would take the module's owner over the message rate limit.
    with live.sdk(live.issue_key().secret) as sdk:
        conversation = sdk.conversations.create()
        sdk.conversations.items.create(conversation.id, items=EVERY_ITEM[:20])
        sdk.conversations.items.create(conversation.id, items=EVERY_ITEM[20:])
        page = sdk.conversations.items.with_raw_response.list(conversation.id, limit=100)
    document = httpx.get(f"{live.base_url}/openapi.json").json()
    validator = jsonschema.Draft202012Validator(
        {**document, "$ref": "#/components/schemas/ItemListOut"}
    )
    validator.validate(page.http_response.json())


def test_include_hides_encrypted_reasoning_and_tool_results_unless_asked(sdk: OpenAI) -> None:
    items = [item for item in EVERY_ITEM if item["type"] in HIDDEN]
    conversation = sdk.conversations.create(items=items)
    plain = {item["type"]: item for item in raw_items(sdk, conversation.id)}
    assert "encrypted_content" not in plain["reasoning"]
    assert plain["file_search_call"]["results"] is None
    assert plain["code_interpreter_call"]["outputs"] is None
    assert "sources" not in plain["web_search_call"]["action"]
    assert "image_url" not in plain["computer_call_output"]["output"]
    for item in plain.values():
        sdk_model(item)
    full = raw_items(sdk, conversation.id, include=["reasoning.encrypted_content"])
    assert {i["type"]: i for i in full}["reasoning"]["encrypted_content"] == "gAAAA-secret"


def test_function_call_output_without_its_call_is_refused_and_nothing_is_written(
    sdk: OpenAI,
) -> None:
    conversation = sdk.conversations.create()
    orphan = {"type": "function_call_output", "call_id": "call_nowhere", "output": "42"}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.conversations.items.create(
            conversation.id, items=[{"role": "user", "content": "hi"}, orphan]
        )
    assert caught.value.param == "items[1].call_id"
    assert "call_nowhere" in caught.value.message
    assert raw_items(sdk, conversation.id) == []
    with pytest.raises(openai.BadRequestError) as on_create:
        sdk.conversations.create(items=[orphan])
    assert on_create.value.param == "items[0].call_id"


def test_malformed_tool_items_and_references_are_refused_by_field(sdk: OpenAI) -> None:
    conversation = sdk.conversations.create()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "function_call", "call_id": "c", "arguments": "{}"}, "items[0].name"),
        ({"type": "reasoning", "id": "rs_x"}, "items[0].summary"),
        ({"type": "item_reference", "id": "msg_1"}, "items[0]"),
        ({"type": 7}, "items[0].type"),
    ]
    for item, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.conversations.items.create(conversation.id, items=[item])
        assert caught.value.param == param, caught.value.body


def test_later_item_types_are_kept_whole(sdk: OpenAI) -> None:
    future = {"type": "hologram_call", "id": "hg_1", "beam": {"power": [1, 2]}, "note": "x"}
    conversation = sdk.conversations.create(items=[future])
    (got,) = raw_items(sdk, conversation.id)
    assert got == future
    sdk.conversations.items.delete("hg_1", conversation_id=conversation.id)
    assert raw_items(sdk, conversation.id) == []


def test_tool_items_are_chat_tool_calls_and_tool_messages_in_one_history(
    sdk: OpenAI, live: Live, owner: Key
) -> None:
    conversation = sdk.conversations.create(items=EVERY_ITEM[:4])
    uid = uuid.UUID(hex=conversation.id.removeprefix("conv_"))
    token = issue_token(JWT_SECRET, tenant=owner.tenant, user=owner.user)
    with httpx.Client(base_url=live.base_url, timeout=20) as http:
        history = http.get(
            f"/api/v1/conversations/{uid}/messages",
            params={"order": "asc"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert history.status_code == 200, history.text
        assert [m["role"] for m in history.json()["data"]] == [
            "user",
            "assistant",
            "assistant",
            "tool",
        ]
        context = http.get(
            f"/internal/v1/conversations/{uid}/context",
            params={"format": "openai"},
            headers={"Authorization": f"Bearer {INTERNAL_KEY}"},
        )
    assert context.status_code == 200, context.text
    chat = context.json()["messages"]
    call, output = chat[2], chat[3]
    assert call["role"] == "assistant"
    assert call["content"] == ""  # the arguments are in the call, not said twice
    assert call["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert output == {
        "role": "tool",
        "content": "sunny",
        "name": None,
        "tool_call_id": "call_1",
        "tool_calls": None,
    }


def test_create_accepts_parameters_of_newer_sdks(sdk: OpenAI) -> None:
    conversation = sdk.conversations.create(
        items=[{"role": "user", "content": "hi"}],
        extra_body={"safety_identifier": "user-hash-1", "prompt_cache_key": "k"},
    )
    assert sdk.conversations.retrieve(conversation.id).id == conversation.id


def test_list_conversations_pages_the_keys_own_conversations(sdk: OpenAI, live: Live) -> None:
    with live.sdk(live.issue_key().secret) as client:
        made = [client.conversations.create(metadata={"n": str(n)}).id for n in range(3)]
        with live.sdk(live.issue_key().secret) as stranger:
            stranger.conversations.create()
        first = client.get("/conversations", cast_to=object, options={"params": {"limit": 2}})
        assert isinstance(first, dict)
        assert first["object"] == "list"
        assert [c["id"] for c in first["data"]] == made[::-1][:2]
        assert first["has_more"] is True
        rest = client.get(
            "/conversations",
            cast_to=object,
            options={"params": {"limit": 2, "after": first["last_id"]}},
        )
        assert isinstance(rest, dict)
        assert [c["id"] for c in rest["data"]] == made[:1]
        assert rest["has_more"] is False
        ascending = client.get(
            "/conversations", cast_to=object, options={"params": {"order": "asc"}}
        )
        assert isinstance(ascending, dict)
        assert [c["id"] for c in ascending["data"]] == made
        with pytest.raises(openai.BadRequestError) as caught:
            client.get("/conversations", cast_to=object, options={"params": {"after": "nope"}})
        assert caught.value.param == "after"


def test_items_name_their_agent_in_metadata_only_when_asked(
    sdk: OpenAI, live: Live, owner: Key
) -> None:
    conversation = sdk.conversations.create(items=EVERY_ITEM[:4])
    uid = uuid.UUID(hex=conversation.id.removeprefix("conv_"))
    with httpx.Client(base_url=live.base_url, timeout=20) as http:
        handoff = http.post(
            f"/internal/v1/conversations/{uid}/handoff",
            json={"to_agent_id": "support-agent"},
            headers={"Authorization": f"Bearer {INTERNAL_KEY}"},
        )
        assert handoff.status_code == 200, handoff.text
        reply = http.post(
            f"/internal/v1/conversations/{uid}/messages",
            json={"role": "assistant", "content": "Support here."},
            headers={"Authorization": f"Bearer {INTERNAL_KEY}"},
        )
        assert reply.status_code == 201, reply.text
    plain = raw_items(sdk, conversation.id, order="asc")
    assert all("metadata" not in item for item in plain)
    asked = raw_items(sdk, conversation.id, order="asc", include=["item.metadata"])
    default_agent = "default"  # the settings' openai_default_agent_id
    by_id = {item["id"]: item["metadata"] for item in asked}
    assert by_id["msg_client_1"] == {"agent_id": None}
    assert by_id["rs_1"] == by_id["fc_1"] == by_id["fco_1"] == {"agent_id": default_agent}
    assert asked[-1]["metadata"] == {"agent_id": "support-agent"}
    assert asked[-2]["role"] == "system"  # the handoff line
    one = sdk.conversations.items.with_raw_response.retrieve(
        asked[-1]["id"], conversation_id=conversation.id, include=["item.metadata"]
    )
    assert one.http_response.json()["metadata"] == {"agent_id": "support-agent"}
    added = sdk.conversations.items.with_raw_response.create(
        conversation.id, items=[EVERY_ITEM[4]], include=["item.metadata"]
    )
    (call,) = added.http_response.json()["data"]
    assert call["metadata"] == {"agent_id": "support-agent"}  # the agent holding it now


def test_an_item_cannot_name_its_agent(sdk: OpenAI) -> None:
    conversation = sdk.conversations.create()
    item = {"role": "assistant", "content": "hi", "metadata": {"agent_id": "someone"}}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.conversations.items.create(conversation.id, items=[item])
    assert caught.value.param == "items[0].metadata"
    assert raw_items(sdk, conversation.id) == []
