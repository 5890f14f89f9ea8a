"""The worker process: one runtime reused by its jobs, and pools that keep a process for high."""

import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis
from rq import Worker
from sqlalchemy import text

from conversation_service.config.settings import ConversationSettings
from conversation_service.queue import runtime
from conversation_service.queue.runtime import JobResources, WorkerRuntime
from tests.live_server import cli_command, service_env
from tests.queue.conftest import QueueEnv


async def _loop_and_engine(resources: JobResources) -> tuple[Any, Any, int]:
    async with resources.engine.connect() as conn:
        one = await conn.scalar(text("SELECT 1"))
    return asyncio.get_running_loop(), resources.engine, one


def test_worker_runtime_runs_every_job_on_one_loop_and_pool(
    settings: ConversationSettings,
) -> None:
    worker_runtime = WorkerRuntime(settings)
    try:
        first = worker_runtime.run(_loop_and_engine)
        second = worker_runtime.run(_loop_and_engine)
    finally:
        worker_runtime.close()
    assert first[2] == second[2] == 1
    assert first[0] is second[0]
    assert first[1] is second[1]
    assert first[0].is_closed()


def test_tasks_a_job_leaves_running_are_cancelled_when_it_ends(
    settings: ConversationSettings,
) -> None:
    left: list[asyncio.Task[None]] = []

    async def job(_resources: JobResources) -> None:
        left.append(asyncio.create_task(asyncio.sleep(3600)))

    worker_runtime = WorkerRuntime(settings)
    try:
        worker_runtime.run(job)
        assert left[0].cancelled()
    finally:
        worker_runtime.close()


def test_a_job_interrupted_outside_its_task_leaves_the_next_job_a_new_loop(
    settings: ConversationSettings,
) -> None:
    loops: list[asyncio.AbstractEventLoop] = []
    stuck: list[asyncio.Task[None]] = []

    def interrupt() -> None:
        raise KeyboardInterrupt  # raised by the loop itself, as RQ's timeout alarm is

    async def job(_resources: JobResources) -> None:
        loops.append(asyncio.get_running_loop())
        stuck.append(asyncio.create_task(asyncio.sleep(3600)))
        asyncio.get_running_loop().call_soon(interrupt)
        await asyncio.sleep(3600)

    async def next_job(_resources: JobResources) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    worker_runtime = WorkerRuntime(settings)
    try:
        with pytest.raises(KeyboardInterrupt):
            worker_runtime.run(job)
        assert loops[0].is_closed()
        assert stuck[0].cancelled()
        assert worker_runtime.run(next_job) is not loops[0]
    finally:
        worker_runtime.close()


def _runtime_is_visible() -> None:
    sys.exit(3 if runtime.current() is not None else 0)


def test_a_forked_process_never_uses_the_runtime_of_its_parent(
    settings: ConversationSettings,
) -> None:
    assert runtime.current() is None
    with runtime.installed(settings) as installed:
        assert runtime.current() is installed
        child = multiprocessing.get_context("fork").Process(target=_runtime_is_visible)
        child.start()
        child.join(timeout=60)
    assert child.exitcode == 0
    assert runtime.current() is None


def _live_workers(redis: SyncRedis, parent: int | None = None) -> dict[int, list[str]]:
    """Registered RQ workers whose process is alive (a child of ``parent``), by pid: queues."""
    alive: dict[int, list[str]] = {}
    children = None if parent is None else set(_children(parent))
    for worker in Worker.all(connection=redis):
        if worker.pid is None or (children is not None and worker.pid not in children):
            continue
        try:
            os.kill(worker.pid, 0)
        except ProcessLookupError:
            continue
        alive[worker.pid] = worker.queue_names()
    return alive


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _kill_with_children(pid: int) -> None:
    """SIGKILL a worker and its children: RQ's scheduler, forked from it, would outlive it."""
    for victim in [*_children(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


async def test_a_pool_keeps_a_process_for_high_and_replaces_it_when_it_dies(
    queue_env: QueueEnv,
) -> None:
    redis = SyncRedis.from_url(queue_env.settings.effective_redis_url())
    pool = queue_env.start_worker("--pool", "3", "--reserve-high", "1")
    # Only this pool's processes: other runs may share the queue tests' Redis database.
    live = partial(_live_workers, redis, pool.pid)
    try:
        workers = await queue_env.wait_until(
            lambda: (found := live()) and len(found) == 3 and found,
            what="three pool workers",
        )
        reserved = [pid for pid, queues in workers.items() if queues == ["conversation-high"]]
        assert len(reserved) == 1
        assert sorted(q for pid, q in workers.items() if pid not in reserved) == [
            ["conversation-high", "conversation-default", "conversation-low"],
            ["conversation-high", "conversation-default", "conversation-low"],
        ]
        _kill_with_children(reserved[0])
        replaced = await queue_env.wait_until(
            lambda: [
                pid
                for pid, queues in live().items()
                if queues == ["conversation-high"] and pid != reserved[0]
            ],
            what="a new reserved worker",
        )
        assert len(replaced) == 1
        assert len(live()) == 3
    finally:
        pids = list(live())
        pool.send_signal(signal.SIGINT)
        try:
            pool.wait(timeout=30)
        finally:
            for pid in pids:  # the pool's children, should its warm shutdown have failed
                if pid != pool.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        redis.close()


def _registered_children(redis: SyncRedis, pid: int) -> set[int]:
    return set(_live_workers(redis)) & set(_children(pid))


@pytest.mark.parametrize("moment", ["forked", "registered"])
async def test_a_pool_stopped_while_its_workers_start_exits(
    queue_env: QueueEnv, moment: str
) -> None:
    """SIGINT while the pool's processes start up (before RQ installs a worker's handlers, or
    while it forks its scheduler) stops them all: none swallows the signal and runs on."""
    redis = SyncRedis.from_url(queue_env.settings.effective_redis_url())
    try:
        for _ in range(4):
            pool = queue_env.start_worker("--pool", "2")
            pid = pool.pid
            try:
                if moment == "forked":
                    await queue_env.wait_until(partial(_children, pid), what="a process")
                else:
                    await queue_env.wait_until(
                        partial(_registered_children, redis, pid),
                        what="a registered worker",
                    )
                pool.send_signal(signal.SIGINT)
                await asyncio.to_thread(pool.wait, 30)  # a guard against a hang, not a timing
            finally:
                for child in _children(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                if pool.poll() is None:
                    pool.kill()
                    pool.wait()
    finally:
        redis.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["--pool", "1", "--reserve-high", "1"],
        ["--pool", "2", "--reserve-high", "2"],
        ["--pool", "2", "--reserve-high", "1", "--queues", "default,low"],
        ["--queues", "high,urgent"],
        ["--queues", ","],
    ],
)
async def test_worker_refuses_a_configuration_that_starves_a_queue(
    queue_env: QueueEnv, argv: list[str]
) -> None:
    # An async test: the app behind ``queue_env`` runs on this test's loop and stops with it
    # (a sync test left its live-hub task pending when the loop closed).
    result = await asyncio.to_thread(
        subprocess.run,
        [*cli_command(), "worker", "--burst", *argv],
        env=service_env(queue_env.env),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr.decode()[-2000:]
    assert b"conversation-service worker:" in result.stderr
