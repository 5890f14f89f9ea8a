"""Rate limits and quotas, kept in Redis so they hold across every API replica.

Limits are configured in the `limits` notation (``60/minute``, ``10/second;600/hour``) and
enforced with the ``limits`` package: its parser, key layout, async Redis storage (on the app's
connection pool) and a strategy chosen by ``rate_limit_strategy``. The default, ``fixed-window``,
is one counter per limit whose window starts at its first hit; it lets a client burst up to twice
a limit across a window boundary, which ``sliding-window-counter`` smooths at the cost of a
longer script (``moving-window`` is exact but stores one entry per request).

Scopes and who counts against them:

* ``requests`` (``rate_limit_requests``): every public request of one user (``/api/v1``, SSE,
  the OpenAI-compatible ``/v1``).
* ``tenant`` (``rate_limit_tenant``): every public request of every user of one tenant.
* ``messages`` (``rate_limit_messages``): message appends of one user (``POST …/messages``,
  and each item a ``/v1`` request adds), on top of ``requests``.
* ``internal`` (``rate_limit_internal``): every ``/internal/v1`` request of one service key;
  the orchestrator's limit is its own and much higher.
* ``websocket`` (``rate_limit_ws_connections``): open WebSockets of one user. ``limits`` counts
  rates, not concurrency, so this one is a lease per connection in a Redis sorted set (score:
  lease expiry, Redis clock), renewed while the connection lives and removed when it closes; a
  replica that dies leaves leases that expire within ``WS_LEASE_SECONDS``.

Hot path: with ``fixed-window`` every counter a request touches (user, tenant, and messages for
an append) is incremented by one script call, ``limits``' own ``incr_expire`` applied to each
key, so a request costs at most one Redis round trip (about 45 µs of CPU here, against 130 µs
for one ``limits`` call per counter); ``limits``' window stats and ``clear`` work on the same
keys. Each call takes a block of hits per counter (1% of the limit, at most 100; one hit for
limits of 100 or less) that later requests spend in-process until it runs out or the window
ends, so under the orchestrator's limit only one request in a hundred waits on Redis. Hits
taken and not spent count against the window: at most one block per replica and counter. The
other strategies call ``limits`` once per counter, concurrently. A refused request gets ``429``
problem details with ``Retry-After`` and the IETF draft ``RateLimit-Limit``,
``RateLimit-Remaining``, ``RateLimit-Reset`` and ``RateLimit-Policy`` headers of the limit it hit.

Identifiers are hashed before they become Redis keys, so no tenant or user id is stored in
Redis by the limiter (``forget`` also clears a user's counters when their data is erased). The
hash is the key's hash tag (``{…}``): on a Redis Cluster a user's counters share one slot.

Fail-open: when Redis does not answer (error, or no answer within
``settings.rate_limit_check_timeout``, 0.5 s by default), the request is let through,
a warning is logged (once, then at most every ``LOG_INTERVAL`` seconds while it lasts), readiness
reports ``"rate_limiter": "degraded (fail-open)"``, and for ``RETRY_SECONDS`` no request waits on
Redis again (then one request probes it while the others pass), so an outage of Redis costs the
API neither availability nor latency.
"""

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

from limits import RateLimitItem
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import RateLimiter as Strategy
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from conversation_service.config.settings import ConversationSettings
from conversation_service.services.auth import Principal
from conversation_service.services.connection_slots import (
    LEASE_SCRIPT,
    UNAVAILABLE,
    ConnectionSlot,
)
from conversation_service.services.limit_storage import (
    FIXED_WINDOW_BATCH,
    limits_storage,
    run_batch,
)
from conversation_service.services.quotas import (
    Quota,
    RateLimitedError,
    RateLimitMetrics,
    digest,
    refusal,
)
from conversation_service.utils.redis_client import as_cluster

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "cs:rl"
WS_KEY_PREFIX: Final = "cs:ws-slots:"
# After a failure, requests skip the limiter for this long before one tries Redis again.
RETRY_SECONDS: Final = 2.0
LOG_INTERVAL: Final = 60.0
# Fixed-window counters are taken from Redis in blocks of up to 1% of the limit (at most 100):
# the block is spent in-process, so most requests under a high limit cost no round trip. The
# price: hits a process took but did not use count against the window, at most one block per
# process and counter (1% of the limit per replica); limits of 100 or less stay exact.
LEASE_FRACTION: Final = 100
MAX_LEASE: Final = 100
# Local blocks kept before expired ones are dropped.
MAX_LOCAL_LEASES: Final = 10_000
# WebSocket close code for a user over ``rate_limit_ws_connections`` (mirrors HTTP 429).
CLOSE_TOO_MANY_CONNECTIONS: Final = 4429
DISABLED: Final = "disabled"
DEGRADED: Final = "degraded (fail-open)"


def tag(identifier: str) -> str:
    """A hash tag: the counters of one user (tenant, service key) share one cluster slot."""
    return "{" + identifier + "}"


def ws_slots_key(user: str) -> str:
    """The lease set of a user's WebSockets, tagged by the user it counts."""
    return WS_KEY_PREFIX + tag(user)


_STRATEGIES: dict[str, Callable[[Any], Strategy]] = {
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
    "moving-window": MovingWindowRateLimiter,
}
Hit = tuple[Quota, RateLimitItem, tuple[str, ...]]
# The quota and limit a request exceeded, and the seconds until that limit's window resets.
Refused = tuple[Quota, RateLimitItem, float]


@dataclass(slots=True)
class _Block:
    """Hits of one counter taken from Redis and not yet spent by this process."""

    left: int
    until: float  # the window's end, on the limiter's clock


def _block_size(item: RateLimitItem) -> int:
    return max(1, min(MAX_LEASE, item.amount // LEASE_FRACTION))


class RateLimiter:
    """Checks requests against the configured quotas and hands out WebSocket leases."""

    def __init__(
        self,
        settings: ConversationSettings,
        redis: Redis,
        *,
        metrics: RateLimitMetrics | None = None,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = settings.rate_limit_enabled
        self.redis = redis
        self.cluster = as_cluster(redis)
        self.storage = limits_storage(settings, redis, KEY_PREFIX)
        self.strategy = _STRATEGIES[settings.rate_limit_strategy](self.storage)
        self.batched = isinstance(self.strategy, FixedWindowRateLimiter)
        self.batch_script = redis.register_script(FIXED_WINDOW_BATCH)
        self.requests = Quota.parse("requests", settings.rate_limit_requests)
        self.tenant = Quota.parse("tenant", settings.rate_limit_tenant)
        self.messages = Quota.parse("messages", settings.rate_limit_messages)
        self.internal = Quota.parse("internal", settings.rate_limit_internal)
        self.ws_connections = settings.rate_limit_ws_connections
        self.check_timeout = settings.rate_limit_check_timeout
        self.lease_script = redis.register_script(LEASE_SCRIPT)
        self._blocks: dict[str, _Block] = {}
        self._keys: dict[tuple[RateLimitItem, tuple[str, ...]], str] = {}
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._skip_until = -math.inf
        self._degraded = False
        self._probing = False
        self._logged_at = -math.inf
        self.metrics = metrics

    async def aclose(self) -> None:
        """Close the client ``limits`` opened for itself (cluster mode; else it shares ours)."""
        bridge = self.storage.bridge
        if self.cluster is not None and isinstance(bridge, RedispyBridge):
            client = bridge.get_connection()
            if isinstance(client, RedisCluster):
                await client.aclose()

    # -- state ------------------------------------------------------------------------------

    def status(self, *, redis_ok: bool = True) -> str:
        """``ok``, ``disabled`` or ``degraded (fail-open)``, for readiness."""
        if not self.enabled:
            return DISABLED
        if self._degraded or not redis_ok:
            return DEGRADED
        return "ok"

    def _skipping(self) -> bool:
        # While degraded, one request at a time finds out whether Redis is back; the others go
        # through without waiting on it.
        return self._clock() < self._skip_until or (self._degraded and self._probing)

    def _failed(self, exc: BaseException) -> None:
        now = self._clock()
        self._skip_until = now + self._retry_seconds
        if self.metrics is not None:
            self.metrics.fail_open.inc()
        if not self._degraded or now - self._logged_at >= LOG_INTERVAL:
            self._logged_at = now
            error = f"{type(exc).__name__}: {exc}"[:200]
            log.warning(
                "rate limiter unavailable (%s): requests are not limited until Redis answers "
                "(fail-open)",
                error,
                extra={"error": error},
            )
        self._degraded = True

    def _succeeded(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("rate limiter recovered: limits are enforced again")

    # -- HTTP -------------------------------------------------------------------------------

    async def check_user(self, principal: Principal, *, message: bool = False) -> None:
        """Count one public request of ``principal`` (and one append when ``message``)."""
        user = tag(digest(principal.tenant_id, principal.user_id))
        checks = [
            (self.requests, ("u", user)),
            (self.tenant, ("t", tag(digest(principal.tenant_id)))),
        ]
        if message:
            checks.append((self.messages, ("m", user)))
        await self._enforce(checks)

    async def check_messages(self, principal: Principal, count: int) -> None:
        """Count ``count`` appends of ``principal`` at once (a ``/v1`` request adding items)."""
        if count > 0:
            user = tag(digest(principal.tenant_id, principal.user_id))
            await self._enforce([(self.messages, ("m", user))], cost=count)

    async def check_internal(self, service_key: str) -> None:
        """Count one internal request of the service key (never stored in clear)."""
        await self._enforce([(self.internal, ("i", tag(digest(service_key))))])

    async def _enforce(
        self, checks: Sequence[tuple[Quota, tuple[str, ...]]], *, cost: int = 1
    ) -> None:
        if not self.enabled or self._skipping():
            return
        hits = [(quota, item, ids) for quota, ids in checks for item in quota.items]
        pending: Coroutine[None, None, Refused | None]
        if self.batched:
            # Most requests spend local blocks only: no Redis call, so no timeout to arm.
            keys = [self._key(item, ids) for _, item, ids in hits]
            empty = self._spend_local(keys, cost)
            if not empty:
                self._succeeded()
                return
            pending = self._refill(hits, keys, empty, cost)
        else:
            pending = self._hit(hits, cost)
        self._probing = self._degraded
        try:
            async with asyncio.timeout(self.check_timeout):
                refused = await pending
        except UNAVAILABLE as exc:
            self._failed(exc)
            return
        finally:
            self._probing = False
        self._succeeded()
        if refused is not None:
            quota, item, reset_after = refused
            if self.metrics is not None:
                self.metrics.rejections.labels(quota.scope).inc()
            raise refusal(quota, item, reset_after)

    def _key(self, item: RateLimitItem, ids: tuple[str, ...]) -> str:
        """The counter's Redis key, as ``limits``' Redis storage names it (memoised).

        ``limits`` joins its ``key_prefix`` and ``key_for`` with a colon; a test reads these
        counters back through ``limits``' own window stats, so a change of layout fails it.
        """
        key = self._keys.get((item, ids))
        if key is None:
            if len(self._keys) >= MAX_LOCAL_LEASES:
                self._keys.clear()
            key = self._keys[item, ids] = f"{KEY_PREFIX}:{item.key_for(*ids)}"
        return key

    def _spend_local(self, keys: list[str], cost: int) -> list[int]:
        """Fixed window: take ``cost`` hits from each key's local block; indexes of short ones."""
        now = self._clock()
        empty = []
        for index, key in enumerate(keys):
            block = self._blocks.get(key)
            if block is None or block.left < cost or block.until <= now:
                empty.append(index)
            else:
                block.left -= cost
        return empty

    async def _refill(
        self, hits: list[Hit], keys: list[str], empty: list[int], cost: int
    ) -> Refused | None:
        """Fixed window: refill the short blocks in one script call (a block holds ``cost``)."""
        now = self._clock()
        sizes = [max(cost, _block_size(hits[index][1])) for index in empty]
        raw = await run_batch(
            self.batch_script,
            self.cluster,
            [keys[index] for index in empty],
            [hits[index][1].get_expiry() for index in empty],
            sizes,
        )
        if len(self._blocks) > MAX_LOCAL_LEASES:
            self._blocks = {k: b for k, b in self._blocks.items() if b.until > now}
        refused: Refused | None = None
        for position, index in enumerate(empty):
            quota, item, _ = hits[index]
            count, ttl_ms = int(raw[2 * position]), int(raw[2 * position + 1])
            window = float(item.get_expiry())
            reset_after = window if ttl_ms < 0 else ttl_ms / 1000
            # The part of the block still under the limit; this request takes the first hits.
            granted = min(sizes[position], item.amount - (count - sizes[position]))
            if granted < cost:
                refused = refused or (quota, item, reset_after)
                continue
            self._blocks[keys[index]] = _Block(left=granted - cost, until=now + reset_after)
        return refused

    async def _hit(self, hits: list[Hit], cost: int) -> Refused | None:
        """Any other strategy: the ``limits`` strategy per limit, concurrently."""
        allowed = await asyncio.gather(
            *(self.strategy.hit(item, *ids, cost=cost) for _, item, ids in hits)
        )
        for (quota, item, ids), ok in zip(hits, allowed, strict=True):
            if not ok:
                stats = await self.strategy.get_window_stats(item, *ids)
                return quota, item, stats.reset_time - time.time()
        return None

    async def forget(self, principal: Principal) -> None:
        """Clear the user's counters and leases (after their data was erased)."""
        user = digest(principal.tenant_id, principal.user_id)
        try:
            for quota, scope in ((self.requests, "u"), (self.messages, "m")):
                for item in quota.items:
                    self._blocks.pop(self._key(item, (scope, tag(user))), None)
                    await self.strategy.clear(item, scope, tag(user))
            await self.redis.delete(ws_slots_key(user))
        except UNAVAILABLE as exc:
            log.warning("rate limit counters not cleared", extra={"error": str(exc)[:200]})

    # -- WebSocket --------------------------------------------------------------------------

    async def acquire_connection(self, principal: Principal) -> ConnectionSlot | None:
        """A lease for one more WebSocket of the user, or None when they hold the maximum."""
        slot = ConnectionSlot(
            self.redis,
            self.lease_script,
            ws_slots_key(digest(principal.tenant_id, principal.user_id)),
            self.ws_connections,
        )
        if not self.enabled or self._skipping():
            return slot
        try:
            held = await slot.renew()
        except UNAVAILABLE as exc:
            self._failed(exc)
            return slot
        self._succeeded()
        if not held:
            if self.metrics is not None:
                self.metrics.rejections.labels("websocket").inc()
            return None
        slot.start()
        return slot


__all__ = ["Quota", "RateLimitMetrics", "RateLimitedError", "RateLimiter"]
