"""Fixtures for queue tests: a Redis database of their own, a callback receiver, real workers."""

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis import Redis as SyncRedis
from sqlalchemy import select

from conversation_service.config.settings import DEV_WEBHOOK_SECRET, ConversationSettings
from conversation_service.db.engine import create_engine
from conversation_service.db.tables import jobs_table
from conversation_service.main import create_app
from tests.conftest import (
    INTERNAL_KEY,
    JWT_SECRET,
    Caller,
    cancel_open_jobs,
    make_settings,
    new_caller,
)
from tests.live_server import cli_command, service_env
from tests.receiver import Receiver, run_receiver


def queue_redis_url(redis_url: str) -> str:
    """The same server, another database: queue tests never see other tests' jobs."""
    base, _, _db = redis_url.rpartition("/")
    return f"{base}/{14 if redis_url.endswith('/15') else 1}"


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker and its children (RQ's scheduler runs in a child that outlives it)."""
    pending, tree = [process.pid], []
    while pending:
        pid = pending.pop()
        tree.append(pid)
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pending.extend(int(child) for child in children)
    for pid in reversed(tree):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)


@dataclass
class QueueEnv:
    """An app, its settings, the env a worker process needs, and the callback receiver."""

    app: FastAPI
    settings: ConversationSettings
    env: dict[str, str]
    receiver: Receiver
    client: httpx.AsyncClient
    caller: Caller
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    last_worker_log: str = ""

    @property
    def service(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {INTERNAL_KEY}"}

    async def run_worker(self, *, limit: float = 60, **extra_env: str) -> None:
        """Run a burst worker to completion (it exits when the queues are empty).

        Awaited, not blocking: the app under test keeps serving (and committing) meanwhile.
        """
        process = await asyncio.create_subprocess_exec(
            *cli_command(),
            "worker",
            "--burst",
            env=service_env({**self.env, **extra_env}),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), limit)
        except TimeoutError:
            process.kill()
            _, stderr = await process.communicate()
            raise AssertionError(
                "burst worker did not finish:\n" + stderr.decode()[-3000:]
            ) from None
        assert process.returncode == 0, stderr.decode()[-3000:]
        self.last_worker_log = stderr.decode()

    def start_worker(self, *argv: str, **extra_env: str) -> subprocess.Popen[bytes]:
        """Start a long-running worker with extra ``argv`` (the test kills or stops it)."""
        process = subprocess.Popen(
            [*cli_command(), "worker", *argv],
            env=service_env({**self.env, **extra_env}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(process)
        return process

    async def jobs(self, **where: Any) -> list[Any]:
        engine = self.app.state.resources.engine
        stmt = (
            select(jobs_table)
            .where(*(jobs_table.c[name] == value for name, value in where.items()))
            .order_by(jobs_table.c.created_at)
        )
        async with engine.connect() as conn:
            return list((await conn.execute(stmt)).mappings().all())

    async def wait_dispatched(self, *job_ids: Any, limit: float = 30.0) -> None:
        """Wait until RQ holds every given job (the relay dispatches after commit)."""
        from rq.job import Job as RQJob

        redis = SyncRedis.from_url(self.settings.effective_redis_url())

        async def present() -> bool:
            rows = {str(r["id"]): r for r in await self.jobs()}
            for job_id in job_ids:
                row = rows.get(str(job_id))
                if row is None:
                    return False
                rq_id = row["rq_job_id"] or f"{row['kind']}-{row['id'].hex}"
                if not RQJob.exists(rq_id, connection=redis):
                    return False
            return True

        try:
            await self.wait_until(present, limit=limit, what="jobs to reach RQ")
        finally:
            redis.close()

    async def wait_until(
        self, check: Callable[[], Any], *, limit: float = 30.0, what: str = "condition"
    ) -> Any:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")


def env_for(settings: ConversationSettings) -> dict[str, str]:
    """The CONVERSATION_* variables that reproduce ``settings`` in a worker process."""
    return {
        "CONVERSATION_ENVIRONMENT": settings.environment.value,
        "CONVERSATION_DATABASE_URL": settings.database_url,
        "CONVERSATION_REDIS_URL": settings.effective_redis_url(),
        "CONVERSATION_JWT_SECRET": JWT_SECRET,
        "CONVERSATION_INTERNAL_API_KEYS": INTERNAL_KEY,
        "CONVERSATION_ORCHESTRATOR_CALLBACK_URL": settings.orchestrator_callback_url or "",
        "CONVERSATION_CALLBACK_ALLOWED_HOSTS": ",".join(settings.callback_allowed_hosts),
        "CONVERSATION_CALLBACK_RETRY_INTERVALS": ",".join(
            map(str, settings.callback_retry_intervals)
        ),
        "CONVERSATION_JOB_RETRY_INTERVALS": ",".join(map(str, settings.job_retry_intervals)),
        "CONVERSATION_CALLBACK_MAX_ATTEMPTS": str(settings.callback_max_attempts),
        "CONVERSATION_CALLBACK_TIMEOUT_SECONDS": str(settings.callback_timeout_seconds),
        "CONVERSATION_JOB_LEASE_SECONDS": str(settings.job_lease_seconds),
        "CONVERSATION_SUMMARY_TRIGGER_TOKENS": str(settings.summary_trigger_tokens),
        "CONVERSATION_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real local HTTP receiver that verifies signatures."""
    with run_receiver(DEV_WEBHOOK_SECRET) as state:
        yield state


def queue_settings(
    database_url: str, redis_url: str, receiver: Receiver, **overrides: Any
) -> ConversationSettings:
    values: dict[str, Any] = {
        "orchestrator_callback_url": receiver.url,
        "callback_allowed_hosts": "127.0.0.1",
        "callback_retry_intervals": "0",
        "job_retry_intervals": "0",
        "callback_max_attempts": 4,
        "callback_timeout_seconds": 2.0,
        "job_lease_seconds": 2,
        "outbox_sweep_interval": 0.2,
        "outbox_grace_seconds": 0.2,
        "outbox_sweep_enabled": True,
    }
    values.update(overrides)
    return make_settings(database_url, redis_url, **values)


@pytest.fixture
async def queue_env(
    settings: ConversationSettings, redis_url: str, receiver: Receiver
) -> AsyncIterator[QueueEnv]:
    """A fresh app on its own Redis database, with callbacks going to ``receiver``."""
    url = queue_redis_url(redis_url)
    SyncRedis.from_url(url).flushdb()
    queue = queue_settings(settings.database_url, url, receiver)
    # Work other tests left in the shared database (live servers' appends) is not this test's:
    # this app's sweep would re-dispatch it and its figures would count it.
    engine = create_engine(queue, null_pool=True)
    try:
        await cancel_open_jobs(engine)
    finally:
        await engine.dispose()
    app = create_app(queue)
    caller = new_caller()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=caller.headers
        ) as client:
            env = QueueEnv(app, queue, env_for(queue), receiver, client, caller)
            try:
                yield env
            finally:
                for process in env.workers:
                    kill_tree(process)
                # Work this test left behind must not run in the next one.
                await cancel_open_jobs(app.state.resources.engine)
