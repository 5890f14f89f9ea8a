"""Stopping background tasks without letting shutdown hang."""

import asyncio
import logging

log = logging.getLogger(__name__)


async def stop_tasks(*tasks: asyncio.Task[None], wait_seconds: float = 2.0) -> None:
    """Cancel ``tasks`` and wait for them, at most ``wait_seconds`` in all.

    A library call that turns a cancellation into an ordinary exception (an inner timeout
    firing at the same moment, a client that reconnects) lets a loop swallow it and go on
    forever; shutdown must not wait on that.
    """
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=wait_seconds)
    for task in pending:
        log.warning("background task ignored its cancellation", extra={"task": task.get_name()})
