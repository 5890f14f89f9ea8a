"""Signed callbacks: verified by a real receiver, retried with the same webhook-id, refused
outside the allowlist, never following redirects, redeliverable."""

import uuid

from tests.conftest import create_conversation
from tests.queue.conftest import QueueEnv


async def user_message(
    env: QueueEnv, content: str = "Can you book me a table for two?"
) -> tuple[str, dict]:
    cid = (await create_conversation(env.client))["id"]
    response = await env.client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": content}
    )
    assert response.status_code == 201
    return cid, response.json()


async def delivery_of(env: QueueEnv, cid: str, event_type: str) -> dict:
    jobs = await env.jobs(conversation_id=uuid.UUID(cid), kind="deliver_callback")
    for job in jobs:
        response = await env.client.get(
            f"/internal/v1/callbacks/{job['args']['delivery_id']}", headers=env.service
        )
        body = response.json()
        if body["event_type"] == event_type:
            return body
    raise AssertionError(f"no {event_type} delivery")


async def test_message_created_callback_is_signed_and_verified(queue_env: QueueEnv) -> None:
    cid, message = await user_message(queue_env)
    await queue_env.run_worker()
    received = [r for r in queue_env.receiver.received if r.event_type == "message.created"]
    assert len(received) == 1
    assert received[0].verified is True
    # The whole message as the 201 gave it, seq included (written by the append's statement).
    assert received[0].body["data"]["message"] == message
    delivery = await delivery_of(queue_env, cid, "message.created")
    assert delivery["status"] == "delivered"
    assert delivery["webhook_id"] == received[0].webhook_id
    assert [a["status_code"] for a in delivery["attempts"]] == [200]
    assert delivery["attempts"][0]["latency_ms"] > 0


async def test_500s_are_retried_with_the_same_webhook_id(queue_env: QueueEnv) -> None:
    queue_env.receiver.statuses = [500, 503]
    cid, _ = await user_message(queue_env)
    await queue_env.run_worker()
    created = [r for r in queue_env.receiver.received if r.event_type == "message.created"]
    assert len(created) == 3
    assert len({r.webhook_id for r in created}) == 1
    delivery = await delivery_of(queue_env, cid, "message.created")
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 200]


async def test_gives_up_after_max_attempts_and_redelivery_sends_again(queue_env: QueueEnv) -> None:
    queue_env.receiver.statuses = [500] * 4
    cid, _ = await user_message(queue_env)
    await queue_env.run_worker()
    delivery = await delivery_of(queue_env, cid, "message.created")
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == queue_env.settings.callback_max_attempts
    redelivered = await queue_env.client.post(
        f"/internal/v1/callbacks/{delivery['id']}/redeliver", headers=queue_env.service
    )
    assert redelivered.status_code == 202
    await queue_env.wait_dispatched(redelivered.json()["job_id"])
    await queue_env.run_worker()
    again = await delivery_of(queue_env, cid, "message.created")
    assert again["status"] == "delivered"
    ids = {r.webhook_id for r in queue_env.receiver.received if r.event_type == "message.created"}
    assert ids == {delivery["webhook_id"]}


async def test_timeouts_are_retried(queue_env: QueueEnv) -> None:
    queue_env.receiver.delay = 3.0  # longer than the 2 s client timeout
    cid, _ = await user_message(queue_env)
    await queue_env.run_worker()
    delivery = await delivery_of(queue_env, cid, "message.created")
    attempts = queue_env.settings.callback_max_attempts
    assert [a["error"] for a in delivery["attempts"]] == ["timeout"] * attempts
    assert delivery["status"] == "failed"


async def test_redirects_are_refused_not_followed(queue_env: QueueEnv) -> None:
    queue_env.receiver.redirect_to = "http://127.0.0.2:9/elsewhere"
    cid, _ = await user_message(queue_env)
    await queue_env.run_worker()
    delivery = await delivery_of(queue_env, cid, "message.created")
    assert delivery["status"] == "failed"
    assert delivery["attempts"][0]["status_code"] == 307
    assert "redirect refused" in delivery["attempts"][0]["error"]
    assert len([r for r in queue_env.receiver.received if r.event_type == "message.created"]) == 1


async def test_task_callback_outside_allowlist_is_422_and_records_nothing(
    queue_env: QueueEnv,
) -> None:
    cid, _ = await user_message(queue_env)
    before = len(await queue_env.jobs(conversation_id=uuid.UUID(cid)))
    for url in (
        "http://127.0.0.2:8080/hook",
        "ftp://127.0.0.1/hook",
        "http://user:pw@127.0.0.1/hook",
        "not a url",
        "http://[::1",  # urlsplit raises on it: must be a 422, not a 500 (found by fuzzing)
    ):
        response = await queue_env.client.post(
            f"/internal/v1/conversations/{cid}/tasks",
            json={"kind": "sentiment", "callback_url": url},
            headers=queue_env.service,
        )
        assert response.status_code == 422, (url, response.text)
    assert len(await queue_env.jobs(conversation_id=uuid.UUID(cid))) == before
