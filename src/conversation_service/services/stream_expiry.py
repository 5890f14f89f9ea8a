"""Idle streams: a streaming message with no delta for ``stream_idle_timeout`` ends ``incomplete``.

Every replica sweeps; a claim in Redis (lease) spreads candidates and the conditional
``UPDATE … WHERE status = 'streaming'`` (``streaming.mark_incomplete``) decides the one winner,
which alone publishes. A claimed message that the sweeper's database does not hold belongs to
another deployment sharing the Redis database (test runs, staging next to CI): its deltas are
left alone, and only its entry in ``cs:streaming`` is dropped, once its partial hash has expired.
A claimed stream that its own hash shows active (the index is only a hint) is put back.
(Dropping both, as the sweep once did, cost a reply its partial content whenever its agent paused
longer than a neighbour's idle timeout, e.g. across an API restart.)
"""

import asyncio
import logging

from conversation_service.errors import MessageNotFoundError
from conversation_service.events.store import StreamStore, parse_member
from conversation_service.services.streaming import mark_incomplete
from conversation_service.services.unit_of_work import Units

log = logging.getLogger(__name__)


async def sweep_idle_streams(
    units: Units,
    store: StreamStore,
    *,
    idle_seconds: float,
    limit: int = 100,
) -> int:
    """One sweep (job wrapper: one transaction per message); returns how many it ended.

    The index's score is only a hint (``events.store``): each claimed stream's own hash says how
    long it has really been idle, and one that is still active goes back in the index.
    """
    idle_ms = max(1, int(idle_seconds * 1000))
    claim = await store.claim_idle(idle_ms, lease_ms=max(idle_ms, 30_000), limit=limit)
    ended = 0
    for member in claim.members:
        ids = parse_member(member)
        if ids is None:
            await store.drop_member(member)
            continue
        conversation_id, message_id = ids
        idle = await store.idle_for(conversation_id, message_id)
        if idle is not None and idle < idle_ms:
            await store.reschedule(member, claim.now_ms - idle)
            continue
        try:
            async with units.write() as uow:
                message = await mark_incomplete(uow, store, conversation_id, message_id)
        except MessageNotFoundError:
            # Another deployment's stream (or a purged one, whose deltas the purge removes).
            await store.forget_if_gone(claim, member)
            continue
        if message is None:
            await store.close(conversation_id, message_id)  # ended elsewhere
        else:
            ended += 1
    return ended


async def run_idle_sweeper(units: Units, store: StreamStore, *, idle_seconds: float) -> None:
    """Sweep forever, every few seconds (the app lifespan runs this as a task)."""
    interval = min(5.0, max(0.05, idle_seconds / 4))
    task = asyncio.current_task()
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep_idle_streams(units, store, idle_seconds=idle_seconds)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("idle stream sweep failed")
        if task is not None and task.cancelling():
            # A call inside the sweep turned our cancellation into an ordinary error (seen at
            # shutdown in tests): honour it instead of sleeping on.
            raise asyncio.CancelledError
