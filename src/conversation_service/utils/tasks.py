"""Stopping background tasks without letting shutdown hang."""

import asyncio
import logging
import time

log = logging.getLogger(__name__)

# How often a task that is still running is cancelled again while ``stop_tasks`` waits: long
# enough for the clean-up a cancelled task does on its way out (a pooled connection returned, a
# socket closed), short enough that a lost cancellation costs shutdown little.
RECANCEL_SECONDS = 0.25


async def stop_tasks(*tasks: asyncio.Task[None], wait_seconds: float = 2.0) -> None:
    """Cancel ``tasks`` and wait for them, at most ``wait_seconds`` in all.

    A task still running after a short wait is cancelled again: on Python 3.11
    ``asyncio.wait_for`` (redis-py sends through it) drops a cancellation that arrives just as
    the awaited call finishes, and the task goes on to its next await as if nothing happened.
    A library call that turns every cancellation into an ordinary exception (an inner timeout
    firing at the same moment, a client that reconnects) can still keep a loop going forever;
    shutdown must not wait on that.
    """
    pending = set(tasks)
    deadline = time.monotonic() + wait_seconds
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_SECONDS, left))
    for task in pending:
        log.warning("background task ignored its cancellation", extra={"task": task.get_name()})
