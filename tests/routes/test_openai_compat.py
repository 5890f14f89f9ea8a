"""The OpenAI-compatible API, driven by the official ``openai`` SDK against a live server.

The SDK is the only client of ``/v1`` here: a real ``conversation-service serve`` process, keys
issued and revoked with ``conversation-service api-keys``, and ``OpenAI``/``AsyncOpenAI`` with
``base_url`` pointed at the server. It runs on every backend under test (SQLite, and PostgreSQL
when TEST_POSTGRES_URL is set). Only the tests of the shared store also speak HTTP by hand, and
only to our own ``/api/v1``.
"""

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import AsyncOpenAI, OpenAI
from redis.asyncio import Redis

from conversation_service.events.log import events_key
from conversation_service.services.auth import issue_token
from tests.conftest import INTERNAL_KEY, JWT_SECRET
from tests.live_server import live_server, run_cli

pytestmark = pytest.mark.slow

CONVERSATION_ID = re.compile(r"^conv_[0-9a-f]{32}$")
ITEM_ID = re.compile(r"^msg_[0-9a-f]{32}$")
ISSUED = re.compile(r"issued API key ([0-9a-f-]{36})")


@dataclass(frozen=True)
class Key:
    """An API key issued by the CLI, with the identity it acts as."""

    id: str
    secret: str
    tenant: str
    user: str


@dataclass(frozen=True)
class Live:
    """A running server and the environment its CLI shares."""

    base_url: str
    env: dict[str, str]

    def issue_key(self, tenant: str | None = None, user: str | None = None) -> Key:
        tenant = tenant or f"t-{uuid.uuid4().hex[:12]}"
        user = user or f"u-{uuid.uuid4().hex[:12]}"
        result = run_cli(
            ["api-keys", "create", "--tenant", tenant, "--user", user, "--name", "sdk test"],
            self.env,
        )
        found = ISSUED.search(result.stderr)
        assert found, result.stderr
        return Key(id=found.group(1), secret=result.stdout.strip(), tenant=tenant, user=user)

    def revoke(self, key: Key) -> None:
        run_cli(["api-keys", "revoke", key.id], self.env)

    def sdk(self, key: str) -> OpenAI:
        # No retries: every answer the tests check is the server's first one.
        return OpenAI(api_key=key, base_url=f"{self.base_url}/v1", max_retries=0, timeout=20)

    def async_sdk(self, key: str) -> AsyncOpenAI:
        return AsyncOpenAI(api_key=key, base_url=f"{self.base_url}/v1", max_retries=0, timeout=20)


@contextmanager
def serve_live(database_url: str, redis_url: str, cwd: Path) -> Iterator[Live]:
    """``conversation-service serve`` on a migrated ``database_url`` (its log stays in ``cwd``)."""
    env = {
        "CONVERSATION_ENVIRONMENT": "test",
        "CONVERSATION_DATABASE_URL": database_url,
        "CONVERSATION_REDIS_URL": redis_url,
        "CONVERSATION_JWT_SECRET": JWT_SECRET,
        "CONVERSATION_INTERNAL_API_KEYS": INTERNAL_KEY,
    }
    run_cli(["migrate"], env)
    with live_server(env, cwd=cwd) as base_url:
        yield Live(base_url=base_url, env=env)


@pytest.fixture(scope="module")
def live(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """``conversation-service serve`` on the backend under test."""
    with serve_live(database_url, redis_url, tmp_path_factory.mktemp("openai-live")) as server:
        yield server


@pytest.fixture(scope="module")
def owner(live: Live) -> Key:
    """The key most tests act with (tests keep to their own conversations)."""
    return live.issue_key()


@pytest.fixture
def sdk(live: Live, owner: Key) -> Iterator[OpenAI]:
    """The synchronous SDK client, authenticated as ``owner``."""
    with live.sdk(owner.secret) as client:
        yield client


def user_text(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def texts(item: Any) -> list[str]:
    return [part.text if part.type != "refusal" else part.refusal for part in item.content]


def api_error(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = exc.value.body
    assert isinstance(body, dict), body
    return body


def test_create_with_items_round_trips_roles_content_and_metadata(sdk: OpenAI) -> None:
    before = int(time.time())
    conversation = sdk.conversations.create(
        items=[
            user_text("What is the capital of France?"),
            {"role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
            {"type": "message", "role": "system", "content": "You are a geographer."},
            {"role": "assistant", "content": "Paris.", "phase": "final_answer"},
            {
                "type": "message",
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "text": "See the atlas.",
                        "annotations": [
                            {
                                "type": "url_citation",
                                "url": "https://example.com/atlas",
                                "title": "Atlas",
                                "start_index": 8,
                                "end_index": 13,
                            }
                        ],
                    },
                    {"type": "refusal", "refusal": "No more questions."},
                ],
            },
        ],
        metadata={"topic": "geography", "ticket": "T-1"},
    )
    assert CONVERSATION_ID.match(conversation.id)
    assert conversation.object == "conversation"
    assert conversation.metadata == {"topic": "geography", "ticket": "T-1"}
    assert before - 1 <= conversation.created_at <= int(time.time()) + 1
    assert sdk.conversations.retrieve(conversation.id) == conversation

    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert [item.role for item in items] == [
        "user",
        "developer",
        "system",
        "assistant",
        "assistant",
    ]
    assert all(item.type == "message" and item.status == "completed" for item in items)
    assert all(ITEM_ID.match(item.id) for item in items)
    assert [[part.type for part in item.content] for item in items] == [
        ["input_text"],
        ["input_text"],
        ["input_text"],
        ["output_text"],
        ["output_text", "refusal"],
    ]
    assert [texts(item) for item in items] == [
        ["What is the capital of France?"],
        ["Be brief."],
        ["You are a geographer."],
        ["Paris."],
        ["See the atlas.", "No more questions."],
    ]
    assert items[3].phase == "final_answer"
    citation = items[4].content[0].annotations[0]
    assert citation.type == "url_citation"
    assert citation.url == "https://example.com/atlas"


def test_update_replaces_the_metadata(sdk: OpenAI) -> None:
    conversation = sdk.conversations.create(metadata={"a": "1", "b": "2"})
    updated = sdk.conversations.update(conversation.id, metadata={"b": "two", "c": "3"})
    assert updated.id == conversation.id
    assert updated.metadata == {"b": "two", "c": "3"}
    assert sdk.conversations.retrieve(conversation.id).metadata == {"b": "two", "c": "3"}
    assert sdk.conversations.update(conversation.id, metadata=None).metadata == {}


def test_added_items_come_back_in_order_with_their_ids(sdk: OpenAI) -> None:
    conversation = sdk.conversations.create(items=[user_text("first")])
    added = sdk.conversations.items.create(
        conversation.id,
        items=[user_text("second"), {"role": "assistant", "content": "third"}],
        include=["message.output_text.logprobs"],
    )
    assert added.object == "list"
    assert [texts(item) for item in added.data] == [["second"], ["third"]]
    assert added.first_id == added.data[0].id
    assert added.last_id == added.data[-1].id
    assert added.has_more is False
    newest_first = sdk.conversations.items.list(conversation.id)  # order defaults to desc
    assert [texts(item) for item in newest_first.data] == [["third"], ["second"], ["first"]]
    assert [item.id for item in newest_first.data[:2]] == [added.data[1].id, added.data[0].id]


def test_list_auto_paginates_in_both_orders(sdk: OpenAI) -> None:
    conversation = sdk.conversations.create(items=[user_text(f"m{n}") for n in range(20)])
    sdk.conversations.items.create(conversation.id, items=[user_text(f"m{n}") for n in (20, 21)])
    sdk.conversations.items.create(conversation.id, items=[user_text(f"m{n}") for n in (22, 23)])
    expected = [[f"m{n}"] for n in range(24)]

    ascending = sdk.conversations.items.list(conversation.id, order="asc", limit=5)
    assert [texts(item) for item in ascending] == expected
    assert len(list(ascending.iter_pages())) == 5
    descending = sdk.conversations.items.list(conversation.id, order="desc", limit=7)
    assert [texts(item) for item in descending] == expected[::-1]

    first_page = sdk.conversations.items.list(conversation.id)
    assert len(first_page.data) == 20  # the default limit
    assert first_page.has_more is True
    ids = [item.id for item in sdk.conversations.items.list(conversation.id, order="asc")]
    window = sdk.conversations.items.list(conversation.id, order="asc", after=ids[9], limit=3)
    assert [item.id for item in window.data] == ids[10:13]
    back = sdk.conversations.items.list(conversation.id, order="desc", after=ids[9], limit=3)
    assert [item.id for item in back.data] == ids[8:5:-1]


def test_retrieve_and_delete_an_item(sdk: OpenAI) -> None:
    conversation = sdk.conversations.create(items=[user_text(f"m{n}") for n in range(4)])
    ids = [item.id for item in sdk.conversations.items.list(conversation.id, order="asc")]

    item = sdk.conversations.items.retrieve(ids[1], conversation_id=conversation.id)
    assert item.id == ids[1]
    assert texts(item) == ["m1"]

    answer = sdk.conversations.items.delete(ids[1], conversation_id=conversation.id)
    assert answer.object == "conversation"
    assert answer.id == conversation.id
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.retrieve(ids[1], conversation_id=conversation.id)
    remaining = sdk.conversations.items.list(conversation.id, order="asc")
    assert [item.id for item in remaining] == [ids[0], ids[2], ids[3]]
    # A deleted item still marks a place, so a client paging past it keeps going.
    after_deleted = sdk.conversations.items.list(conversation.id, order="asc", after=ids[1])
    assert [item.id for item in after_deleted.data] == ids[2:]
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.delete(ids[1], conversation_id=conversation.id)


def test_delete_the_conversation(sdk: OpenAI) -> None:
    conversation = sdk.conversations.create(items=[user_text("bye")])
    deleted = sdk.conversations.delete(conversation.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (
        conversation.id,
        "conversation.deleted",
        True,
    )
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.list(conversation.id)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.delete(conversation.id)


def test_unknown_and_foreign_ids_are_404(live: Live, sdk: OpenAI) -> None:
    mine = sdk.conversations.create(items=[user_text("private")])
    item_id = sdk.conversations.items.list(mine.id).data[0].id
    for missing in (f"conv_{uuid.uuid4().hex}", "conv_nope", str(uuid.UUID(mine.id[5:]))):
        with pytest.raises(openai.NotFoundError) as caught:
            sdk.conversations.retrieve(missing)
        error = api_error(caught)
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "conversation_not_found"
        assert missing in error["message"]
    for missing_item in (f"msg_{uuid.uuid4().hex}", "msg_nope"):
        with pytest.raises(openai.NotFoundError) as caught:
            sdk.conversations.items.retrieve(missing_item, conversation_id=mine.id)
        assert api_error(caught)["code"] == "message_not_found"

    other = live.issue_key(tenant=None)
    with live.sdk(other.secret) as stranger:
        with pytest.raises(openai.NotFoundError):
            stranger.conversations.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            stranger.conversations.items.retrieve(item_id, conversation_id=mine.id)
        with pytest.raises(openai.NotFoundError):
            stranger.conversations.delete(mine.id)
    assert sdk.conversations.retrieve(mine.id).id == mine.id


@pytest.mark.parametrize(
    ("call", "param", "code"),
    [
        pytest.param(
            lambda sdk, conv: sdk.conversations.items.list(conv, limit=0),
            "limit",
            "invalid_value",
            id="limit-0",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.items.list(conv, limit=101),
            "limit",
            "invalid_value",
            id="limit-101",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.items.list(conv, order="sideways"),
            "order",
            "invalid_value",
            id="order",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.items.list(conv, include=["everything"]),
            "include[0]",
            "invalid_value",
            id="include",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.items.list(conv, after=f"msg_{uuid.uuid4().hex}"),
            "after",
            "invalid_value",
            id="after-unknown",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.create(metadata={str(n): "v" for n in range(17)}),
            "metadata",
            "invalid_value",
            id="metadata-17-pairs",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.update(conv, metadata={"k": "v" * 513}),
            "metadata.k",
            "invalid_value",
            id="metadata-long-value",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.create(items=[user_text("x")] * 21),
            "items",
            "invalid_value",
            id="items-21",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.items.create(conv, items=[]),
            "items",
            "invalid_value",
            id="items-none",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.items.create(
                conv, items=[{"role": "user", "content": [{"type": "input_text"}]}]
            ),
            "items[0].content[0].text",
            "missing_required_parameter",
            id="part-without-text",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.items.create(
                conv, items=[{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]
            ),
            "items[0].content[0]",
            "invalid_value",
            id="user-with-output-text",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.items.create(
                conv, items=[{"role": "critic", "content": "x"}]
            ),
            "items[0]",
            "invalid_value",
            id="role",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.items.create(
                conv, items=[{"role": "user", "content": "x", "phase": "commentary"}]
            ),
            "items[0].phase",
            "invalid_value",
            id="phase-on-a-user-message",
        ),
        pytest.param(
            lambda sdk, conv: sdk.conversations.items.create(
                conv, items=[{"role": "user", "content": "x", "colour": "blue"}]
            ),
            "items[0].colour",
            "unknown_parameter",
            id="unknown-field",
        ),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    sdk: OpenAI, call: Any, param: str, code: str
) -> None:
    conversation = sdk.conversations.create()
    with pytest.raises(openai.BadRequestError) as caught:
        call(sdk, conversation.id)
    assert caught.value.status_code == 400
    assert caught.value.param == param, api_error(caught)
    assert caught.value.code == code, api_error(caught)
    assert caught.value.type == "invalid_request_error"
    assert param in str(api_error(caught)["message"])


def test_item_references_are_refused_not_dropped(sdk: OpenAI) -> None:
    # Every item type the SDK defines is stored (tests/routes/test_openai_items.py); a reference
    # carries no item, so it is refused, and the valid item sent with it is not written either.
    conversation = sdk.conversations.create(items=[user_text("kept")])
    reference: Any = {"type": "item_reference", "id": "msg_1"}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.conversations.items.create(conversation.id, items=[user_text("valid"), reference])
    assert caught.value.code == "unsupported_item_type"
    assert caught.value.param == "items[1]"
    assert "'item_reference'" in str(api_error(caught)["message"])
    assert [texts(item) for item in sdk.conversations.items.list(conversation.id)] == [["kept"]]


def test_include_returns_image_urls_and_logprobs_only_when_asked(sdk: OpenAI) -> None:
    image = {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"}
    logprob = {"token": "Hi", "bytes": [72, 105], "logprob": -0.1, "top_logprobs": []}
    answer = {"type": "output_text", "text": "Hi", "annotations": [], "logprobs": [logprob]}
    conversation = sdk.conversations.create(
        items=[
            {"role": "user", "content": [{"type": "input_text", "text": "Look:"}, image]},
            {"type": "message", "role": "assistant", "content": [answer]},
        ]
    )
    plain = sdk.conversations.items.list(conversation.id, order="asc").data
    assert plain[0].content[1].image_url is None
    assert plain[0].content[1].detail == "low"
    assert plain[1].content[0].logprobs is None

    included = sdk.conversations.items.list(
        conversation.id,
        order="asc",
        include=["message.input_image.image_url", "message.output_text.logprobs"],
    ).data
    assert included[0].content[1].image_url == "https://example.com/cat.png"
    assert included[1].content[0].logprobs[0].token == "Hi"
    one = sdk.conversations.items.retrieve(
        plain[0].id, conversation_id=conversation.id, include=["message.input_image.image_url"]
    )
    assert one.content[1].image_url == "https://example.com/cat.png"


def test_unknown_keys_are_401(live: Live) -> None:
    for bad in ("cs_" + "A" * 43, "sk-not-one-of-ours", "cs_"):
        with live.sdk(bad) as client, pytest.raises(openai.AuthenticationError) as caught:
            client.conversations.create()
        assert caught.value.code == "invalid_api_key"


def test_a_revoked_key_is_refused_at_once(live: Live) -> None:
    key = live.issue_key()
    with live.sdk(key.secret) as client:
        conversation = client.conversations.create()
        live.revoke(key)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.conversations.retrieve(conversation.id)
    assert "revoked" in str(api_error(caught)["message"])


def test_items_over_the_message_quota_raise_rate_limit_error_at_once_without_retries(
    live: Live,
) -> None:
    # The default quota is 60 appends a minute and each item is one: the fourth batch of 20 is
    # over. With max_retries=0 (as the README advises) the SDK raises instead of waiting.
    key = live.issue_key()
    with live.sdk(key.secret) as client:
        conversation = client.conversations.create()
        batch = [user_text(f"m{n}") for n in range(20)]
        for _ in range(3):
            client.conversations.items.create(conversation.id, items=batch)
        with pytest.raises(openai.RateLimitError) as caught:
            client.conversations.items.create(conversation.id, items=batch)
        stored = client.conversations.items.list(conversation.id, limit=100)
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert caught.value.code == "rate_limited"
    assert len(stored.data) == 60


async def test_async_client_covers_the_whole_flow(live: Live, owner: Key) -> None:
    async with live.async_sdk(owner.secret) as client:
        conversation = await client.conversations.create(
            items=[user_text(f"m{n}") for n in range(3)], metadata={"via": "async"}
        )
        assert (await client.conversations.retrieve(conversation.id)).metadata == {"via": "async"}
        updated = await client.conversations.update(conversation.id, metadata={"via": "again"})
        assert updated.metadata == {"via": "again"}
        added = await client.conversations.items.create(
            conversation.id, items=[user_text(f"m{n}") for n in range(3, 9)]
        )
        assert len(added.data) == 6

        ascending = [
            texts(item)
            async for item in client.conversations.items.list(conversation.id, order="asc", limit=2)
        ]
        assert ascending == [[f"m{n}"] for n in range(9)]
        descending = [
            item.id async for item in client.conversations.items.list(conversation.id, limit=4)
        ]
        assert len(descending) == 9
        assert descending[0] == added.last_id

        item = await client.conversations.items.retrieve(
            descending[0], conversation_id=conversation.id
        )
        assert texts(item) == ["m8"]
        await client.conversations.items.delete(descending[0], conversation_id=conversation.id)
        with pytest.raises(openai.NotFoundError):
            await client.conversations.items.retrieve(
                descending[0], conversation_id=conversation.id
            )
        with pytest.raises(openai.BadRequestError) as caught:
            await client.conversations.items.list(conversation.id, limit=1000)
        assert caught.value.param == "limit"

        deleted = await client.conversations.delete(conversation.id)
        assert deleted.deleted is True
        with pytest.raises(openai.NotFoundError):
            await client.conversations.retrieve(conversation.id)


async def test_one_store_with_the_public_api(live: Live, owner: Key, sdk: OpenAI) -> None:
    token = issue_token(JWT_SECRET, tenant=owner.tenant, user=owner.user)
    async with httpx.AsyncClient(
        base_url=live.base_url, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        # /v1 → /api/v1: same conversation, same messages, ids mapped deterministically.
        conversation = sdk.conversations.create(
            items=[
                {"role": "developer", "content": "Answer in French."},
                user_text("Hello"),
            ],
            metadata={"channel": "sdk"},
        )
        uid = uuid.UUID(conversation.id.removeprefix("conv_"))
        stored = (await api.get(f"/api/v1/conversations/{uid}")).json()
        assert stored["id"] == str(uid)
        assert stored["agent_id"] == "default"
        assert stored["metadata"] == {"channel": "sdk"}
        messages = (await api.get(f"/api/v1/conversations/{uid}/messages")).json()["data"]
        assert [(m["role"], m["content"]) for m in messages] == [
            ("system", "Answer in French."),
            ("user", "Hello"),
        ]
        assert messages[0]["metadata"] == {"openai_role": "developer"}
        assert messages[1]["content_parts"] == [{"type": "input_text", "text": "Hello"}]
        items = sdk.conversations.items.list(conversation.id, order="asc").data
        assert [item.id for item in items] == [f"msg_{uuid.UUID(m['id']).hex}" for m in messages]

        # /api/v1 → /v1: a conversation and a message written there read back through the SDK.
        created = await api.post(
            "/api/v1/conversations", json={"agent_id": "agent-7", "metadata": {"n": 1}}
        )
        assert created.status_code == 201, created.text
        other = created.json()
        posted = await api.post(
            f"/api/v1/conversations/{other['id']}/messages", json={"content": "Bonjour"}
        )
        assert posted.status_code == 201, posted.text
        public_id = f"conv_{uuid.UUID(other['id']).hex}"
        seen = sdk.conversations.retrieve(public_id)
        assert seen.metadata == {"n": 1}
        [message] = sdk.conversations.items.list(public_id).data
        assert message.id == f"msg_{uuid.UUID(posted.json()['id']).hex}"
        assert (message.role, texts(message), message.content[0].type) == (
            "user",
            ["Bonjour"],
            "input_text",
        )

        # Deleting through /v1 hides it from /api/v1 at once.
        sdk.conversations.delete(public_id)
        assert (await api.get(f"/api/v1/conversations/{other['id']}")).status_code == 404


async def test_writes_through_the_sdk_reach_the_realtime_event_log(
    live: Live, sdk: OpenAI, redis_url: str
) -> None:
    conversation = sdk.conversations.create(items=[user_text("hi")])
    added = sdk.conversations.items.create(
        conversation.id, items=[{"role": "assistant", "content": "hello"}]
    )
    sdk.conversations.update(conversation.id, metadata={"stage": "greeted"})
    sdk.conversations.items.delete(added.data[0].id, conversation_id=conversation.id)

    # The conversation's event log is what every replica fans out to WebSocket and SSE clients
    # (and replays to a client that resumes); events are published before the SDK gets its answer.
    uid = uuid.UUID(conversation.id.removeprefix("conv_"))
    redis = Redis.from_url(redis_url)
    try:
        entries = await redis.xrange(events_key(uid))
    finally:
        await redis.aclose()
    events = [orjson.loads(b"{" + fields[b"b"]) for _, fields in entries]
    assert [event["type"] for event in events] == [
        "session.started",  # a user item is the user's activity, as a user message is
        "message.created",
        "message.created",
        "conversation.updated",
        "message.deleted",
    ]
    assert all(event["conversation_id"] == str(uid) for event in events)
    events = events[1:]
    created = [event["data"]["message"] for event in events[:2]]
    assert [(m["role"], m["content"]) for m in created] == [("user", "hi"), ("assistant", "hello")]
    assert [f"msg_{uuid.UUID(m['id']).hex}" for m in created[1:]] == [added.data[0].id]
    assert events[2]["data"]["conversation"]["metadata"] == {"stage": "greeted"}
    assert events[3]["data"] == {"message_id": str(uuid.UUID(added.data[0].id[4:]))}


async def test_an_archived_conversation_refuses_items_with_409(
    live: Live, owner: Key, sdk: OpenAI
) -> None:
    conversation = sdk.conversations.create()
    uid = uuid.UUID(conversation.id.removeprefix("conv_"))
    token = issue_token(JWT_SECRET, tenant=owner.tenant, user=owner.user)
    async with httpx.AsyncClient(
        base_url=live.base_url, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        archived = await api.post(f"/api/v1/conversations/{uid}/archive")
        assert archived.status_code == 200, archived.text
    with pytest.raises(openai.ConflictError) as caught:
        sdk.conversations.items.create(conversation.id, items=[user_text("too late")])
    assert caught.value.code == "conversation_not_writable"
    assert caught.value.response.headers["x-should-retry"] == "false"
