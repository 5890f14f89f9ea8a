"""Jobs whose subject is gone (a deleted conversation or message) end ``skipped`` at once.

Such a job is not a failure: it runs once, is never retried, logs no error, sends no
``task.failed`` callback, stays out of RQ's failed registry, and its status says why it ended.
"""

import uuid

from redis import Redis as SyncRedis
from rq import Queue
from rq.registry import FailedJobRegistry

from conversation_service.queue.names import queue_names
from tests.conftest import create_conversation
from tests.queue.conftest import QueueEnv


def failed_in_rq(env: QueueEnv) -> int:
    redis = SyncRedis.from_url(env.settings.effective_redis_url())
    try:
        return sum(
            FailedJobRegistry(queue=Queue(name, connection=redis)).count
            for name in queue_names("conversation")
        )
    finally:
        redis.close()


def assert_quiet(env: QueueEnv) -> None:
    """The worker logged no error and no traceback (its log level is WARNING)."""
    log = env.last_worker_log
    assert "Traceback" not in log, log[-3000:]
    assert "NotFoundError" not in log, log[-3000:]
    assert "job failed" not in log, log[-3000:]


async def test_jobs_of_a_conversation_deleted_at_once_end_skipped_without_retry(
    queue_env: QueueEnv,
) -> None:
    cid = (await create_conversation(queue_env.client))["id"]
    response = await queue_env.client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "Hello, please remember that I like tea."},
    )
    assert response.status_code == 201
    message_id = uuid.UUID(response.json()["id"])
    assert (await queue_env.client.delete(f"/api/v1/conversations/{cid}")).status_code == 204

    await queue_env.run_worker()

    [job] = await queue_env.jobs(message_id=message_id, kind="process_message")
    assert (job["status"], job["attempts"]) == ("skipped", 1)
    status = await queue_env.client.get(f"/internal/v1/jobs/{job['id']}", headers=queue_env.service)
    assert status.status_code == 200, status.text
    assert status.json()["status"] == "skipped"
    assert status.json()["result"] == {"skipped": "conversation deleted"}
    assert status.json()["error"] is None
    assert failed_in_rq(queue_env) == 0
    assert_quiet(queue_env)


async def test_a_requested_task_on_a_message_deleted_before_it_runs_is_skipped_silently(
    queue_env: QueueEnv,
) -> None:
    cid = (await create_conversation(queue_env.client))["id"]
    response = await queue_env.client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": "This is awful, I hate it."}
    )
    message_id = response.json()["id"]
    task = await queue_env.client.post(
        f"/internal/v1/conversations/{cid}/tasks",
        json={
            "kind": "sentiment",
            "message_id": message_id,
            "callback_url": queue_env.receiver.url,
        },
        headers=queue_env.service,
    )
    assert task.status_code == 202, task.text
    deleted = await queue_env.client.delete(f"/api/v1/conversations/{cid}/messages/{message_id}")
    assert deleted.status_code == 204, deleted.text

    await queue_env.run_worker()

    jobs = {j["kind"]: j for j in await queue_env.jobs(message_id=uuid.UUID(message_id))}
    assert set(jobs) == {"process_message", "analyze_sentiment"}
    for job in jobs.values():
        assert (job["status"], job["attempts"]) == ("skipped", 1)
        assert job["result"] == {"skipped": "message deleted"}
    events = [r.event_type for r in queue_env.receiver.received]
    assert "task.failed" not in events
    assert "task.completed" not in events
    assert failed_in_rq(queue_env) == 0
    assert_quiet(queue_env)


async def test_a_summary_of_a_conversation_deleted_before_it_runs_is_skipped(
    queue_env: QueueEnv,
) -> None:
    cid = (await create_conversation(queue_env.client))["id"]
    await queue_env.client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    task = await queue_env.client.post(
        f"/internal/v1/conversations/{cid}/tasks",
        json={"kind": "summary"},
        headers=queue_env.service,
    )
    assert task.status_code == 202, task.text
    assert (await queue_env.client.delete(f"/api/v1/conversations/{cid}")).status_code == 204

    await queue_env.run_worker()

    [job] = await queue_env.jobs(id=uuid.UUID(task.json()["id"]))
    assert (job["status"], job["attempts"]) == ("skipped", 1)
    assert job["result"] == {"skipped": "conversation deleted"}
    assert "task.failed" not in [r.event_type for r in queue_env.receiver.received]
    assert_quiet(queue_env)
