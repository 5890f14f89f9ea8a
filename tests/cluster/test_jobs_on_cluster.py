"""Background jobs in cluster mode: RQ works on the queue Redis (``CONVERSATION_QUEUE_REDIS_URL``),
while a job's events go to the conversation's stream on the cluster."""

from types import SimpleNamespace

import httpx
from fastapi import FastAPI
from redis import Redis as SyncRedis
from rq.job import Job as RQJob
from sqlalchemy import select

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import jobs_table
from conversation_service.events.log import read_after
from conversation_service.queue.consumer import run_job
from conversation_service.services import processing
from conversation_service.services.outbox import JobKind, spec_from_row
from tests.conftest import create_conversation
from tests.security.conftest import no_leftover_jobs as no_leftover_jobs


async def _job(app: FastAPI, message_id: str, kind: JobKind) -> SimpleNamespace:
    async with app.state.resources.engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    select(jobs_table).where(
                        jobs_table.c.message_id == message_id, jobs_table.c.kind == kind.value
                    )
                )
            )
            .mappings()
            .one()
        )
    return SimpleNamespace(**row)


async def test_jobs_queue_on_the_queue_redis_and_publish_on_the_cluster(
    app: FastAPI, client: httpx.AsyncClient, settings: ConversationSettings, redis_url: str
) -> None:
    cid = (await create_conversation(client))["id"]
    posted = await client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": "What a wonderful day!"}
    )
    mid = posted.json()["id"]
    processed = await run_job(
        str((await _job(app, mid, JobKind.PROCESS_MESSAGE)).id),
        processing.process_message,
        settings,
    )
    assert "analyze_sentiment" in processed["followups"]
    sentiment = await _job(app, mid, JobKind.ANALYZE_SENTIMENT)
    queue = SyncRedis.from_url(redis_url)
    try:
        # The follow-up went to RQ on the single queue Redis.
        assert RQJob.exists(spec_from_row(sentiment).rq_job_id(), connection=queue)
    finally:
        queue.close()
    await run_job(str(sentiment.id), processing.analyze_sentiment, settings)
    chunk = await read_after(app.state.resources.redis, cid, None, count=100)
    types = [entry.frame for entry in chunk.entries]
    assert any('"type":"sentiment.updated"' in frame for frame in types)
