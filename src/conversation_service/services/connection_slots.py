"""WebSocket connection slots: each open WebSocket of a user holds a lease in Redis.

A user's leases are a sorted set scored by expiry; a connection renews its lease while it lives
and removes it when it closes, and a replica that dies leaves leases that expire within
``WS_LEASE_SECONDS``.
"""

import asyncio
import contextlib
import logging
import uuid
from typing import Final

from limits.errors import StorageError
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from conversation_service.utils.tasks import stop_tasks

log = logging.getLogger(__name__)

WS_LEASE_SECONDS: Final = 60
WS_RENEW_SECONDS: Final = WS_LEASE_SECONDS / 3
UNAVAILABLE = (RedisError, OSError, TimeoutError, StorageError)

# KEYS[1]: the user's lease set. ARGV: connection id, limit, lease ms. 1 = held, 0 = refused.
# Expired leases (their replica died) are dropped first; a held lease is renewed whatever the
# count, so renewal never evicts a live connection.
LEASE_SCRIPT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class ConnectionSlot:
    """One WebSocket's lease: renewed in the background, removed by ``release``."""

    def __init__(self, redis: Redis, lease: AsyncScript, key: str, limit: int) -> None:
        self.redis = redis
        self.lease = lease
        self.key = key
        self.limit = limit
        self.member = uuid.uuid4().hex
        self._renewer: asyncio.Task[None] | None = None

    async def renew(self) -> bool:
        """Take or extend the lease; False when the user already holds the maximum."""
        held = await self.lease(
            keys=[self.key], args=[self.member, self.limit, WS_LEASE_SECONDS * 1000]
        )
        return bool(int(held))

    def start(self) -> None:
        """Renew the lease while the connection lives."""
        self._renewer = asyncio.create_task(self._renew_forever(), name="ws-lease")

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(WS_RENEW_SECONDS)
            # A failed renewal keeps the connection: at worst the lease lapses and the user may
            # briefly open one more than the limit.
            with contextlib.suppress(*UNAVAILABLE):
                await self.renew()

    async def release(self) -> None:
        """Give the lease back (the connection closed)."""
        if self._renewer is None:
            return
        await stop_tasks(self._renewer)
        self._renewer = None
        try:
            await self.redis.zrem(self.key, self.member)
        except UNAVAILABLE as exc:
            log.info("WebSocket lease not released; it expires", extra={"error": str(exc)[:200]})
