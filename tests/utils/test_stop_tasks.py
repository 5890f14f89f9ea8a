"""stop_tasks: background tasks end on shutdown even when one loses its cancellation."""

import asyncio

from conversation_service.utils.tasks import RECANCEL_SECONDS, stop_tasks


async def test_a_task_that_lost_its_cancellation_is_cancelled_again() -> None:
    swallowed = asyncio.Event()

    async def loses_one_cancellation() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # what asyncio.wait_for does on 3.11 when its call just finished
        await asyncio.Event().wait()

    task = asyncio.create_task(loses_one_cancellation())
    await asyncio.sleep(0)
    await stop_tasks(task, wait_seconds=2.0)
    assert swallowed.is_set()
    assert task.cancelled()


async def test_a_task_that_never_ends_is_given_up_on_after_the_wait() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await stop_tasks(task, wait_seconds=0.2)
    assert not task.done()
    release.set()
    task.cancel()
    await asyncio.wait([task])


async def test_a_short_clean_up_after_the_cancellation_is_not_interrupted() -> None:
    cleaned = asyncio.Event()

    async def cleans_up() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(RECANCEL_SECONDS / 2)  # e.g. returning a pooled connection
            cleaned.set()

    task = asyncio.create_task(cleans_up())
    await asyncio.sleep(0)
    await stop_tasks(task)
    assert cleaned.is_set()
