"""``conversation-service-client`` against a live server, on each backend.

Blocking and async clients: typed answers, problem details as typed exceptions, appends that
survive a lost answer with one ``Idempotency-Key``, iterators over every paged list, the
orchestrator's internal calls, the event stream over WebSocket and SSE resuming across
disconnects, and ``verify_callback`` on a Standard Webhooks signature (the service signs so).
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from conversation_service_client import (
    AsyncConversationServiceClient,
    ConversationServiceClient,
    ConversationServiceError,
    Event,
    InvalidCallbackError,
    NotFoundError,
    StreamError,
    UnauthorizedError,
    ValidationError,
    models,
    verify_callback,
)
from conversation_service_client.streaming import Transport
from tests.client.conftest import CuttableProxy
from tests.conftest import Caller
from tests.routes.test_openai_compat import Live

pytestmark = pytest.mark.slow


class LoseFirstAnswer(httpx.BaseTransport):
    """Delivers each append to the server but loses the first answer (a dropped connection)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/messages"):
            self.keys.append(request.headers["Idempotency-Key"])
            if len(self.keys) == 1:
                response.read()
                raise httpx.ReadError("connection lost after the request was sent")
        return response

    def close(self) -> None:
        self.inner.close()


def test_append_retried_after_a_lost_answer_is_stored_once(live: Live, user: Caller) -> None:
    transport = LoseFirstAnswer()
    http = httpx.Client(base_url=live.base_url, transport=transport)
    with ConversationServiceClient(live.base_url, token=user.token, http=http) as client:
        conversation = client.create_conversation(agent_id="agent-1")
        message = client.append_message(conversation.id, "hello once")
        stored = list(client.iter_messages(conversation.id))
    http.close()
    assert isinstance(message, models.MessageOut)
    assert [m.content for m in stored] == ["hello once"]
    assert stored[0].id == message.id
    assert len(transport.keys) == 2
    assert transport.keys[0] == transport.keys[1]


def test_iterators_walk_every_page(client: ConversationServiceClient, user: Caller) -> None:
    conversations = [client.create_conversation(agent_id="agent-1") for _ in range(3)]
    first = conversations[0].id
    for n in range(5):
        client.append_message(first, f"m{n}")
    client.start_session(first)
    client.end_session(first)
    client.start_session(first)
    for n in range(3):
        client.patch_tracked_context(first, {"variables": {"step": n}})

    messages = list(client.iter_messages(first, page_size=2))
    assert [m.content for m in messages] == [f"m{n}" for n in range(5)]
    assert [m.seq for m in messages] == sorted(m.seq for m in messages)
    newest_first = list(client.iter_messages(first, page_size=2, order="desc"))
    assert [m.content for m in newest_first] == [f"m{n}" for n in reversed(range(5))]
    listed = list(client.iter_conversations(limit=2))
    assert {c.id for c in listed} == {c.id for c in conversations}
    sessions = [s.id for s in client.iter_sessions(first, page_size=1)]
    assert sessions == [s.id for s in client.iter_sessions(first, page_size=100)]
    assert len(set(sessions)) == len(sessions) >= 2
    versions = [v.version for v in client.iter_tracked_context_history(first, page_size=2)]
    assert versions == sorted(versions, reverse=True)
    assert len(versions) == 3
    everyone = list(client.iter_all_conversations(user.tenant, user=user.user, limit=2))
    assert {c.id for c in everyone} == {c.id for c in conversations}


def test_problems_are_typed_exceptions(client: ConversationServiceClient, live: Live) -> None:
    with pytest.raises(NotFoundError) as missing:
        client.get_conversation(uuid.uuid4())
    assert missing.value.status == 404
    assert missing.value.code == "conversation-not-found"
    conversation = client.create_conversation(agent_id="agent-1")
    client.append_message(conversation.id, "first", idempotency_key="key-1")
    with pytest.raises(ValidationError) as reused:
        client.append_message(conversation.id, "other", idempotency_key="key-1")
    assert reused.value.status == 422
    assert reused.value.code == "idempotency-key-reused"
    with (
        ConversationServiceClient(live.base_url, token="not-a-jwt") as stranger,
        pytest.raises(UnauthorizedError),
    ):
        stranger.get_conversation(conversation.id)
    with pytest.raises(ConversationServiceError, match="service_key"):
        ConversationServiceClient(live.base_url, token="x").agent_conversation(conversation.id)


async def test_orchestrator_calls_stream_a_reply_and_request_a_task(
    aclient: AsyncConversationServiceClient,
) -> None:
    conversation = await aclient.create_conversation(agent_id="agent-1")
    question = await aclient.append_message(conversation.id, "what is the weather?")
    assert (await aclient.agent_conversation(conversation.id)).agent_id == "agent-1"
    window = await aclient.context_window(conversation.id)
    assert [m.content for m in window.messages] == ["what is the weather?"]

    reply = await aclient.create_agent_message(
        conversation.id, role="assistant", status="streaming", parent_id=str(question.id)
    )
    await aclient.append_deltas(conversation.id, reply.id, [(0, "sunny "), (1, "and ")])
    # A re-sent index (a retry) is ignored.
    await aclient.append_deltas(conversation.id, reply.id, [(1, "and "), (2, "warm")])
    done = await aclient.complete_message(conversation.id, reply.id, metadata={"model": "demo"})
    assert done.message.content == "sunny and warm"
    assert done.message.status == models.MessageStatus.completed

    broken = await aclient.create_agent_message(
        conversation.id, role="assistant", status="streaming"
    )
    failed = await aclient.fail_message(conversation.id, broken.id, "model timed out")
    assert failed.message.status == models.MessageStatus.failed

    job = await aclient.request_task(conversation.id, "sentiment")
    assert (await aclient.agent_job(job.id)).id == job.id
    openai_window = await aclient.openai_context_window(conversation.id)
    assert "sunny and warm" in [m.content for m in openai_window.messages]


async def test_workflow_conversation_handoff_and_session_context(
    aclient: AsyncConversationServiceClient, user: Caller
) -> None:
    opened = await aclient.create_workflow_conversation(
        tenant=user.tenant, user=user.user, agent_id="agent-1", workflow_id="wf-1"
    )
    conversation_id = opened.id
    moved = await aclient.hand_off(conversation_id, "agent-2", reason="billing question")
    assert (moved.from_agent_id, moved.to_agent_id) == ("agent-1", "agent-2")
    assert (await aclient.get_conversation(conversation_id)).agent_id == "agent-2"
    session = await aclient.start_session(conversation_id)
    await aclient.patch_session_context(session.id, variables={"plan": "pro"})
    assert (await aclient.session_context(session.id)).variables == {"plan": "pro"}
    message = await aclient.append_message(conversation_id, "hello")
    tagged = await aclient.update_message(conversation_id, message.id, metadata={"pinned": True})
    assert tagged.metadata == {"pinned": True}


async def collect(events: AsyncIterator[Event], into: asyncio.Queue[Event]) -> None:
    async for event in events:
        await into.put(event)


def contents(event: Event) -> list[str]:
    """The messages an event brings: a snapshot's, or a created one's."""
    if event.type == "snapshot":
        return [message["content"] for message in event.data["messages"]]
    if event.type == "message.created":
        return [event.data["message"]["content"]]
    return []


async def created(queue: asyncio.Queue[Event], count: int) -> list[str]:
    """The next ``count`` messages the stream brings (other events are skipped)."""
    seen: list[str] = []
    while len(seen) < count:
        seen += contents(await asyncio.wait_for(queue.get(), 20))
    return seen


async def resume_across_a_cut(live: Live, user: Caller, proxy: CuttableProxy) -> list[str]:
    """Stream through ``proxy``, cut it while three messages are appended, restore it."""
    direct = AsyncConversationServiceClient(live.base_url, token=user.token)
    via_proxy = AsyncConversationServiceClient(proxy.url, token=user.token)
    queue: asyncio.Queue[Event] = asyncio.Queue()
    async with direct, via_proxy:
        conversation = await direct.create_conversation(agent_id="agent-1")
        await direct.append_message(conversation.id, "m0")
        # "0-0" is older than the log proves it holds: the stream starts with a snapshot (m0).
        consumer = asyncio.create_task(
            collect(via_proxy.stream(conversation.id, after="0-0"), queue)
        )
        try:
            seen = await created(queue, 1)
            await proxy.cut()
            for n in (1, 2, 3):
                await direct.append_message(conversation.id, f"m{n}")
            await proxy.start()
            await direct.append_message(conversation.id, "m4")
            seen += await created(queue, 4)
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
    return seen


async def test_websocket_stream_resumes_without_gap_across_a_disconnect(
    live: Live, user: Caller, proxy: CuttableProxy
) -> None:
    assert await resume_across_a_cut(live, user, proxy) == ["m0", "m1", "m2", "m3", "m4"]


async def test_stream_falls_back_to_sse_when_websockets_are_refused(
    live: Live, user: Caller, websocketless_proxy: CuttableProxy
) -> None:
    seen = await resume_across_a_cut(live, user, websocketless_proxy)
    assert seen == ["m0", "m1", "m2", "m3", "m4"]
    assert websocketless_proxy.websocket_refusals == 1


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_blocking_stream_resumes_after_the_last_event_id(
    client: ConversationServiceClient, transport: Transport
) -> None:
    conversation = client.create_conversation(agent_id="agent-1")
    client.append_message(conversation.id, "a")
    events = client.stream(conversation.id, after="0-0", transports=(transport,))
    snapshot = next(events)
    events.close()
    assert contents(snapshot) == ["a"]
    assert snapshot.id is not None
    for text in ("b", "c"):
        client.append_message(conversation.id, text)
    # A later stream resuming after the snapshot's id gets exactly what came after it.
    rest = client.stream(conversation.id, after=snapshot.id, transports=(transport,))
    following = [next(e for e in rest if e.type == "message.created") for _ in range(2)]
    rest.close()
    assert [contents(e)[0] for e in following] == ["b", "c"]


@pytest.mark.parametrize(
    ("transport", "error"), [("websocket", StreamError), ("sse", UnauthorizedError)]
)
def test_stream_with_a_refused_token_fails_instead_of_retrying(
    live: Live, transport: Transport, error: type[Exception]
) -> None:
    with ConversationServiceClient(live.base_url, token="not-a-jwt") as stranger:
        # max_reconnects only bounds the test if the stream wrongly retried.
        events = stranger.stream(uuid.uuid4(), transports=(transport,), max_reconnects=2)
        with pytest.raises(error, match=r"unauthenticated|401"):
            next(events)


def signed(secret: str, payload: dict[str, Any], at: datetime) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload)
    msg_id = f"msg_{uuid.uuid4().hex}"
    signature = Webhook(secret).sign(msg_id, at, body)
    headers = {
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": str(int(at.timestamp())),
        "Webhook-Signature": signature,
    }
    return headers, body.encode()


def test_verify_callback_accepts_a_standard_webhooks_signature_and_refuses_forgeries() -> None:
    secret = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
    payload = {"type": "message.created", "data": {"conversation_id": str(uuid.uuid4())}}
    now = datetime.now(UTC)
    headers, body = signed(secret, payload, now)
    assert verify_callback(headers, body, secret) == payload
    with pytest.raises(InvalidCallbackError):
        verify_callback(headers, body.replace(b"message", b"massage"), secret)
    with pytest.raises(InvalidCallbackError):
        verify_callback(headers, body, "whsec_" + "b3RoZXItc2VjcmV0LWtleS1mb3ItdGVzdHM=")
    stale_headers, stale_body = signed(secret, payload, now - timedelta(minutes=10))
    with pytest.raises(InvalidCallbackError):
        verify_callback(stale_headers, stale_body, secret)
    with pytest.raises(InvalidCallbackError):
        verify_callback({}, body, secret)
