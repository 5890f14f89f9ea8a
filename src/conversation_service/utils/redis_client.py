"""The asyncio Redis client of the app and of the workers' jobs: redis-py's, with one option.

redis-py 8 hands out a pooled connection that the server has closed (it skips its check while
maintenance notifications may arrive): the first command on it fails with ``ConnectionError``.
Such a command is sent once more, on a new connection. Timeouts are not retried, so a hung Redis
costs one ``socket_timeout``, not several.
"""

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


def async_redis(url: str, **kwargs: Any) -> Redis:
    """``Redis.from_url(url, **kwargs)``, retrying a command once on a dropped connection."""
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    return Redis.from_url(url, retry=retry, **kwargs)
