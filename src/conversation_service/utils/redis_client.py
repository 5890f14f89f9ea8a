"""The asyncio Redis client of the app and of the workers' jobs: redis-py's, with one option.

redis-py 8 hands out a pooled connection that the server has closed (it skips its check while
maintenance notifications may arrive): the first command on it fails with ``ConnectionError``.
Such a command is sent once more, on a new connection. Timeouts are not retried, so a hung Redis
costs one ``socket_timeout``, not several.

In cluster mode (``CONVERSATION_REDIS_MODE=cluster``) the client is redis-py's
``redis.asyncio.cluster.RedisCluster``: the URL names any node, the client discovers the others,
routes each command by its key's hash slot and follows ``MOVED``/failovers with its own retries.
Every command and script the service sends touches keys of one slot (see the key layout in
``docs/ARCHITECTURE.md``), so callers use it through the same command methods as a ``Redis``;
it is typed as one for them.
"""

from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


def async_redis(url: str, *, cluster: bool = False, **kwargs: Any) -> Redis:
    """``Redis.from_url(url, **kwargs)`` retrying once on a dropped connection, or a cluster
    client when ``cluster`` (its own retries follow failovers)."""
    if cluster:
        return cast(Redis, RedisCluster.from_url(url, **kwargs))
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    return Redis.from_url(url, retry=retry, **kwargs)


def as_cluster(redis: Redis) -> RedisCluster | None:
    """The cluster client behind ``redis``, or None for a single server."""
    client: object = redis
    return client if isinstance(client, RedisCluster) else None
