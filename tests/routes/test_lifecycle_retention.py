"""Retention: conversations inactive for the archive period are archived, those inactive for the
retention period are purged with everything hanging off them, by a ``retention`` job that every
replica schedules and only one per interval can exist.

Inactivity is made by moving a conversation's timestamps into the past, never by waiting.
"""

import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis
from rq.utils import import_attribute
from sqlalchemy import func, select, update

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import (
    callback_deliveries_table,
    conversations_table,
    jobs_table,
    messages_table,
    sessions_table,
)
from conversation_service.events.log import events_key, partial_key
from conversation_service.queue.consumer import run_job
from conversation_service.services import retention
from conversation_service.services.outbox import TASK_PATHS, JobKind, JobSpec
from conversation_service.services.retention import RetentionScheduler
from conversation_service.utils.clock import utcnow
from tests.conftest import INTERNAL_KEY, create_conversation, make_settings, new_caller
from tests.routes.test_lifecycle import lifecycle_redis_url

# Leaves no pending jobs behind for the queue tests' workers.
from tests.security.conftest import no_leftover_jobs as no_leftover_jobs
from tests.websocket.helpers import wait_until

SERVICE = {"Authorization": f"Bearer {INTERNAL_KEY}"}


def retention_settings(settings: ConversationSettings, **overrides: Any) -> ConversationSettings:
    values: dict[str, Any] = {
        "retention_archive_after_days": 30,
        "retention_purge_after_days": 365,
        "orchestrator_callback_url": "http://127.0.0.1:9/hook",
        "callback_allowed_hosts": "127.0.0.1",
        **overrides,
    }
    return make_settings(
        settings.database_url, lifecycle_redis_url(settings.effective_redis_url()), **values
    )


@asynccontextmanager
async def running(settings: ConversationSettings) -> AsyncIterator[FastAPI]:
    from conversation_service.main import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def age(app: FastAPI, conversation_id: str, days: int) -> None:
    """Make a conversation's last activity ``days`` old."""
    then = utcnow() - timedelta(days=days)
    async with app.state.resources.engine.begin() as conn:
        await conn.execute(
            update(conversations_table)
            .where(conversations_table.c.id == uuid.UUID(conversation_id))
            .values(created_at=then, updated_at=then, last_message_at=then)
        )


class Submitted:
    """Stands in for the outbox relay: records what a scheduler hands it."""

    def __init__(self) -> None:
        self.specs: list[JobSpec] = []

    def submit(self, specs: list[JobSpec]) -> None:
        self.specs.extend(specs)


async def test_retention_archives_the_inactive_and_purges_the_expired(
    settings: ConversationSettings,
) -> None:
    caller = new_caller()
    configured = retention_settings(settings)
    async with running(configured) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=caller.headers
        ) as client:
            fresh, stale, ancient, buried = [
                (await create_conversation(client, title=name))["id"]
                for name in ("fresh", "stale", "ancient", "buried")
            ]
            posted = await client.post(
                f"/api/v1/conversations/{ancient}/messages", json={"content": "long ago"}
            )
            assert posted.status_code == 201
            reply = await client.post(
                f"/internal/v1/conversations/{ancient}/messages",
                json={"role": "assistant", "status": "streaming"},
                headers=SERVICE,
            )
            reply_id = reply.json()["id"]
            await client.post(
                f"/internal/v1/conversations/{ancient}/messages/{reply_id}/deltas",
                json={"deltas": [{"index": 0, "text": "half a reply"}]},
                headers=SERVICE,
            )
            assert (await client.delete(f"/api/v1/conversations/{buried}")).status_code == 204
            await age(app, stale, 40)
            await age(app, ancient, 400)
            await age(app, buried, 400)
            redis: Redis = app.state.resources.redis
            assert await redis.exists(events_key(ancient), partial_key(ancient, reply_id)) == 2

            # The lifespan's scheduler recorded this interval's job; one of another interval:
            interval = random.randrange(10**6, 10**9) * 3600.0
            scheduler = RetentionScheduler(
                app.state.resources.engine,
                Submitted(),  # type: ignore[arg-type]
                configured,
                clock=lambda: interval,
            )
            spec = await scheduler.schedule_due()
            assert spec is not None
            result = await run_job(str(spec.id), retention.retention, configured)
            assert result["archived"] >= 1
            assert result["purged"] >= 2

            assert (await client.get(f"/api/v1/conversations/{fresh}")).json()["status"] == "active"
            assert (await client.get(f"/api/v1/conversations/{stale}")).json()[
                "status"
            ] == "archived"
            refused = await client.post(
                f"/api/v1/conversations/{stale}/messages", json={"content": "anyone?"}
            )
            assert refused.status_code == 409
            assert (await client.get(f"/api/v1/conversations/{ancient}")).status_code == 404
            gone = [uuid.UUID(ancient), uuid.UUID(buried)]
            async with app.state.resources.engine.connect() as conn:
                for table in (conversations_table, messages_table, sessions_table):
                    column = table.c.id if table is conversations_table else table.c.conversation_id
                    left = await conn.scalar(select(func.count()).where(column.in_(gone)))
                    assert left == 0, table.name
                archived_callbacks = await conn.scalar(
                    select(func.count()).where(
                        callback_deliveries_table.c.conversation_id == uuid.UUID(stale),
                        callback_deliveries_table.c.event_type == "conversation.archived",
                    )
                )
                job = (
                    (await conn.execute(select(jobs_table).where(jobs_table.c.id == spec.id)))
                    .mappings()
                    .one()
                )
            assert archived_callbacks == 1
            assert job["status"] == "finished"
            assert job["result"] == result
            assert await redis.exists(events_key(ancient), partial_key(ancient, reply_id)) == 0


async def test_one_retention_job_per_interval_however_many_replicas_schedule_it(
    settings: ConversationSettings, engine: Any
) -> None:
    configured = retention_settings(settings, retention_interval_seconds=60)
    # A fake clock in an interval nobody else uses: the schedule depends on it, not on time.
    now = [random.randrange(10**6, 10**9) * 60.0]
    relays = [Submitted(), Submitted()]
    replicas = [
        RetentionScheduler(engine, relay, configured, clock=lambda: now[0])  # type: ignore[arg-type]
        for relay in relays
    ]
    first = await replicas[0].schedule_due()
    assert first is not None
    assert await replicas[1].schedule_due() is None
    assert await replicas[0].schedule_due() is None
    now[0] += 60
    second = await replicas[1].schedule_due()
    assert second is not None
    assert await replicas[0].schedule_due() is None
    assert [s.id for s in relays[0].specs] == [first.id]
    assert [s.id for s in relays[1].specs] == [second.id]
    keys = [first.dedupe_key, second.dedupe_key]
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(jobs_table.c.dedupe_key, jobs_table.c.kind, jobs_table.c.queue).where(
                    jobs_table.c.dedupe_key.in_(keys)
                )
            )
        ).all()
    assert sorted(rows) == sorted((key, "retention", "low") for key in keys)


async def test_retention_off_schedules_nothing(settings: ConversationSettings, engine: Any) -> None:
    off = retention_settings(
        settings, retention_archive_after_days=None, retention_purge_after_days=None
    )
    scheduler = RetentionScheduler(engine, Submitted(), off)  # type: ignore[arg-type]
    assert not scheduler.enabled
    scheduler.start()
    await scheduler.stop()


async def test_every_replica_schedules_retention_from_its_lifespan(
    settings: ConversationSettings,
) -> None:
    configured = retention_settings(settings, retention_interval_seconds=3600)
    bucket = int(time.time() // 3600)
    async with running(configured) as app:

        async def recorded() -> bool:
            async with app.state.resources.engine.connect() as conn:
                found = await conn.scalar(
                    select(func.count()).where(
                        jobs_table.c.dedupe_key.in_(
                            [f"retention:{bucket}", f"retention:{bucket + 1}"]
                        )
                    )
                )
            return bool(found)

        await wait_until(recorded)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/health/ready")).status_code == 200


def test_the_retention_task_is_importable_by_its_dotted_path() -> None:
    task = import_attribute(TASK_PATHS[JobKind.RETENTION])
    assert callable(task)
    assert task.__name__ == "retention"
