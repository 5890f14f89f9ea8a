"""Per-user erasure: after ``DELETE /api/v1/users/me/data`` (or the internal route) nothing of
the user is left in any table or in Redis, their queued work is cancelled, and the other users of
the tenant keep everything.

The victim gets every kind of data the service stores: conversations (one soft-deleted), user and
streaming agent messages, an idempotency record, sessions with hot context, tracked context and
its versions, a summary, an API key, outbox jobs queued in RQ and callback deliveries. Then every
row of every table and every Redis key and value is searched for anything that names them.
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import orjson
from fastapi import FastAPI
from redis.asyncio import Redis
from rq.job import Job as RQJob
from sqlalchemy import select

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import Base, jobs_table
from conversation_service.main import create_app
from conversation_service.services import summaries
from tests.conftest import INTERNAL_KEY, Caller, make_settings, new_caller

# Leaves no pending jobs behind for the queue tests' workers.
from tests.security.conftest import no_leftover_jobs as no_leftover_jobs
from tests.websocket.helpers import wait_until

SERVICE = {"Authorization": f"Bearer {INTERNAL_KEY}"}


def lifecycle_redis_url(redis_url: str) -> str:
    """The same server, a database of these tests' own, so a scan of it is small."""
    base, _, _db = redis_url.rpartition("/")
    return f"{base}/{12 if redis_url.endswith('/15') else 2}"


@asynccontextmanager
async def erasure_app(settings: ConversationSettings) -> AsyncIterator[FastAPI]:
    """An app whose appends record orchestrator callbacks (never sent: no worker runs here)."""
    redis_url = lifecycle_redis_url(settings.effective_redis_url())
    async with Redis.from_url(redis_url) as redis:
        await redis.flushdb()
    app = create_app(
        make_settings(
            settings.database_url,
            redis_url,
            orchestrator_callback_url="http://127.0.0.1:9/hook",
            callback_allowed_hosts="127.0.0.1",
        )
    )
    async with app.router.lifespan_context(app):
        yield app


@dataclass
class Footprint:
    """Everything that names one user: ids and a marker written into their content."""

    caller: Caller
    marker: str = field(default_factory=lambda: f"marker-{uuid.uuid4().hex}")
    conversation_ids: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)

    def needles(self) -> list[str]:
        ids = [*self.conversation_ids, *self.message_ids, *self.session_ids]
        return [self.caller.user, self.marker, *ids, *(uuid.UUID(i).hex for i in ids)]


async def fill(app: FastAPI, client: httpx.AsyncClient, who: Footprint) -> None:
    """Give ``who`` one of every kind of data, through the API where there is one."""
    headers = who.caller.headers
    for title in ("first", "second", "doomed"):
        response = await client.post(
            "/api/v1/conversations",
            json={"agent_id": "a", "title": f"{title} {who.marker}", "metadata": {"m": who.marker}},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        who.conversation_ids.append(response.json()["id"])
    first, second, doomed = who.conversation_ids
    for cid, key in ((first, "k-1"), (first, None), (second, None), (doomed, None)):
        posted = await client.post(
            f"/api/v1/conversations/{cid}/messages",
            json={"content": f"hello {who.marker}", "metadata": {"channel": "web"}},
            headers={**headers, **({"Idempotency-Key": key} if key else {})},
        )
        assert posted.status_code == 201, posted.text
        who.message_ids.append(posted.json()["id"])
    assert (await client.delete(f"/api/v1/conversations/{doomed}", headers=headers)).is_success
    # A streaming reply with deltas: the event-stream tail and the partial content in Redis.
    reply = await client.post(
        f"/internal/v1/conversations/{first}/messages",
        json={"role": "assistant", "status": "streaming", "content": who.marker},
        headers=SERVICE,
    )
    assert reply.status_code == 201, reply.text
    mid = reply.json()["id"]
    who.message_ids.append(mid)
    deltas = await client.post(
        f"/internal/v1/conversations/{first}/messages/{mid}/deltas",
        json={"deltas": [{"index": 0, "text": who.marker}]},
        headers=SERVICE,
    )
    assert deltas.status_code == 202, deltas.text
    # Session context (hot copy in Redis), tracked context, a summary, an API key.
    session = await client.get(f"/api/v1/conversations/{first}/sessions/current", headers=headers)
    sid = session.json()["id"]
    who.session_ids.append(sid)
    patched = await client.patch(
        f"/internal/v1/sessions/{sid}/context",
        json={"variables": {"note": who.marker}},
        headers=SERVICE,
    )
    assert patched.status_code == 200, patched.text
    tracked = await client.patch(
        f"/internal/v1/conversations/{first}/tracked-context",
        json={"intent": who.marker},
        headers=SERVICE,
    )
    assert tracked.status_code == 200, tracked.text
    async with app.state.resources.engine.begin() as conn:
        await summaries.add_summary(
            conn,
            conversation_id=uuid.UUID(first),
            tenant_id=who.caller.tenant,
            content=f"summary {who.marker}",
            covers_until_seq=2,
            method="extractive",
        )
    key = await client.post(
        "/internal/v1/api-keys",
        json={"tenant": who.caller.tenant, "user": who.caller.user, "name": who.marker},
        headers=SERVICE,
    )
    assert key.status_code == 201, key.text


async def rows_naming(app: FastAPI, needles: list[str]) -> list[tuple[str, str]]:
    """Every row of every table whose values contain one of ``needles``."""
    found = []
    async with app.state.resources.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in (await conn.execute(select(table))).mappings():
                text = orjson.dumps({str(k): v for k, v in row.items()}, default=str).decode()
                found.extend((table.name, n) for n in needles if n in text)
    return found


_READERS = {
    "string": lambda pipe, key: pipe.get(key),
    "hash": lambda pipe, key: pipe.hgetall(key),
    "list": lambda pipe, key: pipe.lrange(key, 0, -1),
    "set": lambda pipe, key: pipe.smembers(key),
    "zset": lambda pipe, key: pipe.zrange(key, 0, -1),
    "stream": lambda pipe, key: pipe.xrange(key),
}


async def redis_naming(redis: Redis, needles: list[str]) -> list[tuple[str, str]]:
    """Every Redis key whose name or readable value contains one of ``needles``.

    RQ's own keys are matched by name only: their payloads are compressed pickles (which hold
    job row ids, never user data) and reading thousands of them would dominate the test.
    """
    keys = [key async for key in redis.scan_iter(count=1000)]
    found = [
        (key.decode(errors="replace"), n)
        for key in keys
        if key.startswith(b"rq:")
        for n in needles
        if n.encode() in key
    ]
    keys = [key for key in keys if not key.startswith(b"rq:")]
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        async with redis.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.type(key)
            kinds = [kind.decode() for kind in await pipe.execute()]
        async with redis.pipeline(transaction=False) as pipe:
            for key, kind in zip(chunk, kinds, strict=True):
                _READERS.get(kind, lambda p, k: p.exists(k))(pipe, key)
            values = await pipe.execute(raise_on_error=False)
        for key, value in zip(chunk, values, strict=True):
            text = key.decode(errors="replace") + repr(value)
            found.extend((key.decode(errors="replace"), n) for n in needles if n in text)
    return found


async def test_erasing_my_data_leaves_nothing_of_me_and_keeps_my_neighbours(
    settings: ConversationSettings,
) -> None:
    victim = Footprint(new_caller())
    neighbour = Footprint(new_caller(victim.caller.tenant))
    async with erasure_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await fill(app, client, victim)
            await fill(app, client, neighbour)
            redis: Redis = app.state.resources.redis

            rq = app.state.resources.relay.dispatcher.redis

            async def victim_jobs() -> list[str]:
                async with app.state.resources.engine.connect() as conn:
                    rows = (
                        await conn.execute(
                            select(jobs_table.c.id, jobs_table.c.kind).where(
                                jobs_table.c.conversation_id.in_(
                                    [uuid.UUID(c) for c in victim.conversation_ids]
                                )
                            )
                        )
                    ).all()
                return [f"{row.kind}-{row.id.hex}" for row in rows]

            def in_rq(ids: list[str]) -> list[str]:
                return [rq_id for rq_id in ids if RQJob.exists(rq_id, connection=rq)]

            async def processing_in_rq() -> bool:
                processing = [i for i in await victim_jobs() if i.startswith("process_message")]
                return len(in_rq(processing)) == 4

            # The relay enqueues each append's work after its commit (lifecycle callbacks wait
            # for the sweep, off here): wait until RQ holds the processing of the 4 messages.
            await wait_until(processing_in_rq)
            queued = in_rq(await victim_jobs())
            assert await rows_naming(app, victim.needles())
            assert await redis_naming(redis, victim.needles())

            response = await client.delete("/api/v1/users/me/data", headers=victim.caller.headers)
            assert response.status_code == 200, response.text
            report = response.json()
            assert report["conversations"] == 3
            assert report["messages"] == 5
            assert report["sessions"] >= 1
            assert report["summaries"] == 1
            assert report["tracked_context_versions"] == 1
            assert report["api_keys"] == 1
            assert report["jobs_cancelled"] >= len(queued) > 0
            assert report["callbacks_deleted"] >= 4

            assert await rows_naming(app, victim.needles()) == []
            assert await redis_naming(redis, victim.needles()) == []
            assert in_rq(queued) == []
            # The neighbour in the same tenant keeps everything.
            assert {n for _, n in await rows_naming(app, neighbour.needles())} >= {
                neighbour.caller.user,
                neighbour.marker,
                *neighbour.conversation_ids[:2],
            }
            listed = await client.get("/api/v1/conversations", headers=neighbour.caller.headers)
            assert len(listed.json()["data"]) == 2
            # The victim sees an empty account, and erasing again is harmless.
            mine = await client.get("/api/v1/conversations", headers=victim.caller.headers)
            assert mine.json()["data"] == []
            again = await client.delete("/api/v1/users/me/data", headers=victim.caller.headers)
            assert again.status_code == 200
            assert set(again.json().values()) == {0}


async def test_the_orchestrator_erases_a_user_through_the_internal_route(
    settings: ConversationSettings,
) -> None:
    victim = Footprint(new_caller())
    async with erasure_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await fill(app, client, victim)
            url = f"/internal/v1/tenants/{victim.caller.tenant}/users/{victim.caller.user}/data"
            # A user token cannot use the internal route, not even on themselves.
            refused = await client.delete(url, headers=victim.caller.headers)
            assert refused.status_code == 401
            assert (await rows_naming(app, [victim.marker])) != []
            response = await client.delete(url, headers=SERVICE)
            assert response.status_code == 200, response.text
            assert response.json()["conversations"] == 3
            assert await rows_naming(app, victim.needles()) == []
            assert await redis_naming(app.state.resources.redis, victim.needles()) == []
