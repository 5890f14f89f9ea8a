"""Stopping background tasks without letting shutdown hang."""

import asyncio
import logging

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[None], *, wait_seconds: float = 2.0) -> None:
    """Cancel ``task`` and wait for it, at most ``wait_seconds``.

    A library call that turns a cancellation into an ordinary exception (an inner timeout
    firing at the same moment, a client that reconnects) lets a loop swallow it and go on
    forever; shutdown must not wait on that.
    """
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=wait_seconds)
    if not done:
        log.warning("background task ignored its cancellation", extra={"task": task.get_name()})
