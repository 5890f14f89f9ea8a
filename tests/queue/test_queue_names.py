"""RQ queues carry CONVERSATION_QUEUE_PREFIX; a worker moves this service's jobs off the
unprefixed queues of earlier releases once, and leaves other applications' jobs alone."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from redis import Redis as SyncRedis
from rq import Queue

from conversation_service.config.settings import ConversationSettings
from conversation_service.main import create_app
from conversation_service.queue.names import drain_legacy_queues, queue_name
from conversation_service.queue.producer import Dispatcher
from conversation_service.services.outbox import TASK_PATHS, JobKind
from tests.conftest import create_conversation, make_settings, new_caller
from tests.queue.conftest import QueueEnv, env_for, queue_settings
from tests.receiver import Receiver


def test_queue_names_carry_the_prefix_and_an_empty_prefix_keeps_the_bare_names() -> None:
    assert queue_name("conversation", "high") == "conversation-high"
    assert queue_name("", "low") == "low"
    settings = make_settings("sqlite+aiosqlite://", "redis://127.0.0.1:1/0", queue_prefix="acme")
    dispatcher = Dispatcher(SyncRedis.from_url("redis://127.0.0.1:1/0"), settings)
    assert [queue.name for queue in dispatcher.queues.values()] == [
        "acme-high",
        "acme-default",
        "acme-low",
    ]


@pytest.fixture
async def own_env(
    settings: ConversationSettings, redis_url: str, receiver: Receiver
) -> AsyncIterator[QueueEnv]:
    """The queue tests' app on the session's Redis database: other runs that share the queue
    tests' database have workers on the unprefixed queues, which would take this test's jobs."""
    queue = queue_settings(settings.database_url, redis_url, receiver)
    app = create_app(queue)
    caller = new_caller()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=caller.headers
        ) as client:
            yield QueueEnv(app, queue, env_for(queue), receiver, client, caller)


async def test_a_worker_drains_jobs_left_on_unprefixed_queues(own_env: QueueEnv) -> None:
    queue_env = own_env
    redis = SyncRedis.from_url(queue_env.settings.effective_redis_url())
    cid = (await create_conversation(queue_env.client))["id"]
    await queue_env.client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    [row] = await queue_env.jobs(conversation_id=uuid.UUID(cid), kind="process_message")
    await queue_env.wait_dispatched(row["id"])
    # As an earlier release left it: the job on the bare ``high`` queue, not the prefixed one.
    prefixed = Queue(queue_name("conversation", "high"), connection=redis)
    legacy = Queue("high", connection=redis)
    job = prefixed.fetch_job(f"process_message-{row['id'].hex}")
    assert job is not None
    prefixed.remove(job)
    legacy.enqueue_job(job)
    foreign = legacy.enqueue("another_app.tasks.work", job_id=f"foreign-{uuid.uuid4().hex}")

    await queue_env.run_worker()

    [done] = await queue_env.jobs(id=row["id"])
    assert done["status"] == "finished"
    # Other tests may leave jobs there: look only at this test's two.
    left = legacy.get_job_ids()
    assert foreign.id in left
    assert job.id not in left
    assert drain_legacy_queues(redis, "") == 0, "no prefix: the bare queues are the live ones"
    legacy.remove(foreign)
    foreign.delete()
    redis.close()


def test_every_task_path_names_a_task_of_this_service() -> None:
    assert all(path.startswith("conversation_service.queue.tasks.") for path in TASK_PATHS.values())
    assert set(TASK_PATHS) == set(JobKind)


async def test_the_sweep_redispatches_a_job_an_old_api_left_on_an_unprefixed_queue(
    own_env: QueueEnv,
) -> None:
    redis = SyncRedis.from_url(own_env.settings.effective_redis_url())
    cid = (await create_conversation(own_env.client))["id"]
    await own_env.client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    [row] = await own_env.jobs(conversation_id=uuid.UUID(cid), kind="process_message")
    await own_env.wait_dispatched(row["id"])
    prefixed = Queue(queue_name("conversation", "high"), connection=redis)
    legacy = Queue("high", connection=redis)
    job = prefixed.fetch_job(f"process_message-{row['id'].hex}")
    assert job is not None
    prefixed.remove(job)
    legacy.enqueue_job(job)  # as an API of an earlier release would have

    async def redispatched() -> str | None:
        [now] = await own_env.jobs(id=row["id"])
        rq_id: str | None = now["rq_job_id"]
        return rq_id if rq_id and rq_id in prefixed.get_job_ids() else None

    rq_id = await own_env.wait_until(redispatched, what="the sweep to re-dispatch the job")
    assert rq_id.endswith("-s1"), "a new id: the stale copy can no longer claim the row"
    legacy.remove(job)
    job.delete()
    redis.close()
