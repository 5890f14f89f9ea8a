"""The asyncio Redis client of the app and of the workers' jobs: redis-py's, with one option.

redis-py 8 hands out a pooled connection that the server has closed (it skips its check while
maintenance notifications may arrive): the first command on it fails with ``ConnectionError``.
Such a command is sent once more, on a new connection. Timeouts are not retried, so a hung Redis
costs one ``socket_timeout``, not several. Its default pool refuses a command outright when 100
connections are in use (``MaxConnectionsError``), which a burst of viewers and requests on one
process reaches; the pool here is redis-py's ``BlockingConnectionPool``, where such a command
waits up to ``POOL_WAIT_SECONDS`` for a connection to come back.

In cluster mode (``CONVERSATION_REDIS_MODE=cluster``) the client is redis-py's
``redis.asyncio.cluster.RedisCluster``: the URL names any node, the client discovers the others,
routes each command by its key's hash slot and follows ``MOVED``/failovers with its own retries.
Every command and script the service sends touches keys of one slot (see the key layout in
``docs/ARCHITECTURE.md``), so callers use it through the same command methods as a ``Redis``;
it is typed as one for them.
"""

from typing import Any, Final, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

# Connections per client (per node on a cluster), and how long a command waits for a free one.
MAX_CONNECTIONS: Final = 200
POOL_WAIT_SECONDS: Final = 5.0


def async_redis(
    url: str, *, cluster: bool = False, max_connections: int = MAX_CONNECTIONS, **kwargs: Any
) -> Redis:
    """``Redis.from_url(url, **kwargs)`` on a waiting pool, retrying once on a dropped
    connection, or a cluster client when ``cluster`` (its own retries follow failovers)."""
    if cluster:
        return cast(Redis, RedisCluster.from_url(url, max_connections=max_connections, **kwargs))
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_WAIT_SECONDS, retry=retry, **kwargs
    )
    return Redis.from_pool(pool)


def as_cluster(redis: Redis) -> RedisCluster | None:
    """The cluster client behind ``redis``, or None for a single server."""
    client: object = redis
    return client if isinstance(client, RedisCluster) else None


# How long a write on a cluster waits for its replica's acknowledgement before it counts anyway.
REPLICA_WAIT_MS: Final = 100


async def run_replicated(
    redis: Redis, script: AsyncScript, keys: list[str], args: list[Any]
) -> Any:
    """Run ``script``; on a cluster, answer only once a replica of its node has the write.

    A primary acknowledges a write before its replica receives it (asynchronous replication);
    if it dies in between, the replica it is replaced by never saw a write the caller was told
    succeeded. ``WAIT 1`` on the script's own connection (a pipeline sends both on one) closes
    that window for failovers of one node: a caller is answered after the replica holds the
    write, or after ``REPLICA_WAIT_MS`` when it does not answer (then the write counts, as on a
    single server). A slot whose primary has no replica (yet) skips the wait.
    """
    cluster = as_cluster(redis)
    if cluster is None:
        return await script(keys=keys, args=args)
    await cluster.initialize()  # a fresh client (a job's) knows no slots before its first call
    slot = cluster.keyslot(keys[0])
    node = cluster.get_node_from_key(keys[0])
    if node is None or len(cluster.nodes_manager.slots_cache.get(slot, ())) < 2:
        return await script(keys=keys, args=args)
    for _ in range(2):
        async with cluster.pipeline(transaction=False) as pipe:
            # (The pipeline refuses its evalsha method; the raw command is routed the same way.)
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS, target_nodes=node)
            result, _acknowledged = await pipe.execute(raise_on_error=False)
        if isinstance(result, NoScriptError):
            # A promoted replica does not have the scripts its old primary loaded.
            await cluster.script_load(script.script)
            continue
        if isinstance(result, Exception):
            raise result
        return result
    return await script(keys=keys, args=args)
