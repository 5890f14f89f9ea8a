"""The client's retry rules, against scripted answers (no server needed to decide them)."""

import uuid

import httpx
import pytest

from conversation_service_client import (
    ConflictError,
    ConversationServiceClient,
    RetryPolicy,
    ServiceUnavailableError,
)

PROBLEM = "https://conversation-service.dev/problems/"
CONVERSATION = str(uuid.uuid4())
MESSAGE = {
    "id": str(uuid.uuid4()),
    "conversation_id": CONVERSATION,
    "seq": 1,
    "role": "user",
    "content": "hi",
    "content_parts": None,
    "status": "completed",
    "metadata": {},
    "token_count": None,
    "language": None,
    "sentiment": None,
    "parent_id": None,
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}


def problem(status: int, code: str) -> httpx.Response:
    body = {"type": PROBLEM + code, "title": code, "status": status, "detail": code}
    headers = {"content-type": "application/problem+json", "retry-after": "0"}
    return httpx.Response(status, json=body, headers=headers)


def scripted(*answers: httpx.Response) -> tuple[ConversationServiceClient, list[httpx.Request]]:
    sent: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return queue.pop(0)

    http = httpx.Client(base_url="http://service", transport=httpx.MockTransport(handle))
    client = ConversationServiceClient(
        "http://service", token="t", service_key="k", http=http, retry=RetryPolicy(base_delay=0)
    )
    return client, sent


def test_append_in_flight_is_retried_with_the_same_key() -> None:
    client, sent = scripted(
        problem(409, "idempotency-key-in-flight"),
        problem(503, "service-unavailable"),
        httpx.Response(201, json=MESSAGE),
    )
    assert client.append_message(CONVERSATION, "hi").content == "hi"
    assert len({request.headers["Idempotency-Key"] for request in sent}) == 1
    assert len(sent) == 3


def test_other_conflicts_are_raised_at_once() -> None:
    client, sent = scripted(problem(409, "conversation-not-writable"))
    with pytest.raises(ConflictError) as refused:
        client.append_message(CONVERSATION, "hi")
    assert refused.value.code == "conversation-not-writable"
    assert len(sent) == 1


def test_retries_stop_after_the_policys_attempts() -> None:
    client, sent = scripted(*[problem(503, "service-unavailable") for _ in range(4)])
    with pytest.raises(ServiceUnavailableError):
        client.get_conversation(CONVERSATION)
    assert len(sent) == 4


def test_creating_an_agent_message_is_never_retried() -> None:
    client, sent = scripted(problem(503, "service-unavailable"))
    with pytest.raises(ServiceUnavailableError):
        client.create_agent_message(CONVERSATION, role="assistant", content="x")
    assert len(sent) == 1
