"""Where the rate limiter keeps its counters: ``limits``' Redis storage and the batch script.

On a Redis Cluster every counter is a key of its own slot: the batch script, which takes blocks
of several counters in one call, is sent once per slot (concurrently), so no call spans two slots.
"""

import asyncio
from typing import Any

from limits.aio.storage import RedisClusterStorage, RedisStorage
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from conversation_service.config.settings import ConversationSettings

# ``limits``' own fixed-window script (incr_expire.lua) applied to every key of a request in one
# call: same keys, same counts, same expiry, so ``limits``' window stats and ``clear`` read and
# reset them. ARGV: each key's expiry, then each key's increment (its lease). Returns count and
# TTL (ms) per key.
FIXED_WINDOW_BATCH = """
local out = {}
local n = #KEYS
for i, key in ipairs(KEYS) do
  local current = redis.call('INCRBY', key, ARGV[n + i])
  if current == tonumber(ARGV[n + i]) then redis.call('EXPIRE', key, ARGV[i]) end
  out[2 * i - 1] = current
  out[2 * i] = redis.call('PTTL', key)
end
return out
"""


async def run_batch(
    script: AsyncScript,
    cluster: RedisCluster | None,
    keys: list[str],
    expiries: list[int],
    sizes: list[int],
) -> list[Any]:
    """The batch script over ``keys``: one call, or on a cluster one call per hash slot
    (concurrently), its replies put back in ``keys``' order."""
    if cluster is None:
        return list(await script(keys=keys, args=[*expiries, *sizes]))
    slots: dict[int, list[int]] = {}
    for position, key in enumerate(keys):
        slots.setdefault(cluster.keyslot(key), []).append(position)
    groups = list(slots.values())
    replies = await asyncio.gather(
        *(
            script(
                keys=[keys[p] for p in group],
                args=[*(expiries[p] for p in group), *(sizes[p] for p in group)],
            )
            for group in groups
        )
    )
    raw: list[Any] = [0] * (2 * len(keys))
    for group, reply in zip(groups, replies, strict=True):
        for offset, position in enumerate(group):
            raw[2 * position : 2 * position + 2] = reply[2 * offset : 2 * offset + 2]
    return raw


def limits_storage(settings: ConversationSettings, redis: Redis, key_prefix: str) -> RedisStorage:
    """``limits``' storage on the app's Redis (its pool), or its cluster storage on a cluster."""
    if settings.redis_cluster:
        # ``limits`` opens a cluster client of its own (it cannot share redis-py's).
        address = settings.effective_redis_url().partition("://")[2]
        return RedisClusterStorage(
            "async+redis+cluster://" + address, implementation="redispy", key_prefix=key_prefix
        )
    return RedisStorage(
        "async+" + settings.effective_redis_url(),
        implementation="redispy",
        key_prefix=key_prefix,
        connection_pool=redis.connection_pool,  # type: ignore[arg-type]
    )
