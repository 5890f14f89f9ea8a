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
Redis by the limiter (``forget`` also clears a user's counters when their data is erased).

Fail-open: when Redis does not answer (error, or no answer within
``settings.rate_limit_check_timeout``, 0.5 s by default), the request is let through,
a warning is logged (once, then at most every ``LOG_INTERVAL`` seconds while it lasts), readiness
reports ``"rate_limiter": "degraded (fail-open)"``, and for ``RETRY_SECONDS`` no request waits on
Redis again (then one request probes it while the others pass), so an outage of Redis costs the
API neither availability nor latency.
"""

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Final

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import RateLimiter as Strategy
from limits.errors import StorageError
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from conversation_service.config.settings import ConversationSettings
from conversation_service.errors import ServiceError
from conversation_service.services.auth import Principal
from conversation_service.utils.tasks import stop_tasks

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "cs:rl"
WS_KEY_PREFIX: Final = "cs:ws-slots:"
# After a failure, requests skip the limiter for this long before one tries Redis again.
RETRY_SECONDS: Final = 2.0
LOG_INTERVAL: Final = 60.0
WS_LEASE_SECONDS: Final = 60
# Fixed-window counters are taken from Redis in blocks of up to 1% of the limit (at most 100):
# the block is spent in-process, so most requests under a high limit cost no round trip. The
# price: hits a process took but did not use count against the window, at most one block per
# process and counter (1% of the limit per replica); limits of 100 or less stay exact.
LEASE_FRACTION: Final = 100
MAX_LEASE: Final = 100
# Local blocks kept before expired ones are dropped.
MAX_LOCAL_LEASES: Final = 10_000
WS_RENEW_SECONDS: Final = WS_LEASE_SECONDS / 3
# WebSocket close code for a user over ``rate_limit_ws_connections`` (mirrors HTTP 429).
CLOSE_TOO_MANY_CONNECTIONS: Final = 4429
DISABLED: Final = "disabled"
DEGRADED: Final = "degraded (fail-open)"

_UNAVAILABLE = (RedisError, OSError, TimeoutError, StorageError)

# ``limits``' own fixed-window script (incr_expire.lua) applied to every key of a request in one
# call: same keys, same counts, same expiry, so ``limits``' window stats and ``clear`` read and
# reset them. ARGV: each key's expiry, then each key's increment (its lease). Returns count and
# TTL (ms) per key.
_FIXED_WINDOW_BATCH = """
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

# KEYS[1]: the user's lease set. ARGV: connection id, limit, lease ms. 1 = held, 0 = refused.
# Expired leases (their replica died) are dropped first; a held lease is renewed whatever the
# count, so renewal never evicts a live connection.
_LEASE = """
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


class RateLimitedError(ServiceError):
    """A rate limit or quota was exceeded; ``Retry-After`` says when to try again."""

    status = 429
    code = "rate-limited"
    title = "Too many requests"


@dataclass(frozen=True, slots=True)
class Quota:
    """One configured scope: its name and its limits (all must pass)."""

    scope: str
    items: tuple[RateLimitItem, ...]

    @classmethod
    def parse(cls, scope: str, notation: str) -> "Quota":
        """A quota from the `limits` notation."""
        return cls(scope, tuple(parse_many(notation)))


@functools.lru_cache(maxsize=MAX_LOCAL_LEASES)
def _digest(*parts: str) -> str:
    # Pseudonymous keys: Redis never holds a tenant or user id in clear.
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


_STRATEGIES: dict[str, Callable[[RedisStorage], Strategy]] = {
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
    "moving-window": MovingWindowRateLimiter,
}
Hit = tuple[Quota, RateLimitItem, tuple[str, ...]]
# The quota and limit a request exceeded, and the seconds until that limit's window resets.
Refused = tuple[Quota, RateLimitItem, float]


def _refusal(quota: Quota, item: RateLimitItem, reset_after: float) -> RateLimitedError:
    """429 problem details with ``Retry-After`` and the IETF draft ``RateLimit-*`` headers."""
    window = item.get_expiry()
    seconds = max(1, math.ceil(min(max(reset_after, 0.0), float(window))))
    return RateLimitedError(
        f"{quota.scope} limit of {item.amount} per {window} s exceeded; retry in {seconds} s",
        extra={"limit_scope": quota.scope, "retry_after": seconds},
        headers={
            "Retry-After": str(seconds),
            "RateLimit-Limit": str(item.amount),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(seconds),
            "RateLimit-Policy": f"{item.amount};w={window}",
        },
    )


class RateLimitMetrics:
    """Prometheus counters of the limiter (created with the app, registered once)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rejections = Counter(
            "rate_limit_rejections_total",
            "Requests and WebSockets refused by a rate limit, by scope.",
            ["scope"],
            registry=registry,
        )
        self.fail_open = Counter(
            "rate_limit_fail_open_total",
            "Rate-limit checks let through because Redis did not answer.",
            registry=registry,
        )


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
        self.storage = RedisStorage(
            "async+" + settings.effective_redis_url(),
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        self.strategy = _STRATEGIES[settings.rate_limit_strategy](self.storage)
        self.batched = isinstance(self.strategy, FixedWindowRateLimiter)
        self.batch_script = redis.register_script(_FIXED_WINDOW_BATCH)
        self.requests = Quota.parse("requests", settings.rate_limit_requests)
        self.tenant = Quota.parse("tenant", settings.rate_limit_tenant)
        self.messages = Quota.parse("messages", settings.rate_limit_messages)
        self.internal = Quota.parse("internal", settings.rate_limit_internal)
        self.ws_connections = settings.rate_limit_ws_connections
        self.check_timeout = settings.rate_limit_check_timeout
        self.lease_script = redis.register_script(_LEASE)
        self._blocks: dict[str, _Block] = {}
        self._keys: dict[tuple[RateLimitItem, tuple[str, ...]], str] = {}
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._skip_until = -math.inf
        self._degraded = False
        self._probing = False
        self._logged_at = -math.inf
        self.metrics = metrics

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
            log.warning(
                "rate limiter unavailable: requests are not limited until Redis answers "
                "(fail-open)",
                extra={"error": f"{type(exc).__name__}: {exc}"[:200]},
            )
        self._degraded = True

    def _succeeded(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("rate limiter recovered: limits are enforced again")

    # -- HTTP -------------------------------------------------------------------------------

    async def check_user(self, principal: Principal, *, message: bool = False) -> None:
        """Count one public request of ``principal`` (and one append when ``message``)."""
        user = _digest(principal.tenant_id, principal.user_id)
        checks = [
            (self.requests, ("u", user)),
            (self.tenant, ("t", _digest(principal.tenant_id))),
        ]
        if message:
            checks.append((self.messages, ("m", user)))
        await self._enforce(checks)

    async def check_messages(self, principal: Principal, count: int) -> None:
        """Count ``count`` appends of ``principal`` at once (a ``/v1`` request adding items)."""
        if count > 0:
            user = _digest(principal.tenant_id, principal.user_id)
            await self._enforce([(self.messages, ("m", user))], cost=count)

    async def check_internal(self, service_key: str) -> None:
        """Count one internal request of the service key (never stored in clear)."""
        await self._enforce([(self.internal, ("i", _digest(service_key)))])

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
        except _UNAVAILABLE as exc:
            self._failed(exc)
            return
        finally:
            self._probing = False
        self._succeeded()
        if refused is not None:
            quota, item, reset_after = refused
            if self.metrics is not None:
                self.metrics.rejections.labels(quota.scope).inc()
            raise _refusal(quota, item, reset_after)

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
        raw = await self.batch_script(
            keys=[keys[index] for index in empty],
            args=[*(hits[index][1].get_expiry() for index in empty), *sizes],
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
        user = _digest(principal.tenant_id, principal.user_id)
        try:
            for quota, scope in ((self.requests, "u"), (self.messages, "m")):
                for item in quota.items:
                    self._blocks.pop(self._key(item, (scope, user)), None)
                    await self.strategy.clear(item, scope, user)
            await self.redis.delete(WS_KEY_PREFIX + user)
        except _UNAVAILABLE as exc:
            log.warning("rate limit counters not cleared", extra={"error": str(exc)[:200]})

    # -- WebSocket --------------------------------------------------------------------------

    async def acquire_connection(self, principal: Principal) -> "ConnectionSlot | None":
        """A lease for one more WebSocket of the user, or None when they hold the maximum."""
        slot = ConnectionSlot(self, WS_KEY_PREFIX + _digest(principal.tenant_id, principal.user_id))
        if not self.enabled or self._skipping():
            return slot
        try:
            held = await slot.renew()
        except _UNAVAILABLE as exc:
            self._failed(exc)
            return slot
        self._succeeded()
        if not held:
            if self.metrics is not None:
                self.metrics.rejections.labels("websocket").inc()
            return None
        slot.start()
        return slot


class ConnectionSlot:
    """One WebSocket's lease: renewed in the background, removed by ``release``."""

    def __init__(self, limiter: RateLimiter, key: str) -> None:
        self.limiter = limiter
        self.key = key
        self.member = uuid.uuid4().hex
        self._renewer: asyncio.Task[None] | None = None

    async def renew(self) -> bool:
        """Take or extend the lease; False when the user already holds the maximum."""
        held = await self.limiter.lease_script(
            keys=[self.key],
            args=[self.member, self.limiter.ws_connections, WS_LEASE_SECONDS * 1000],
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
            with contextlib.suppress(*_UNAVAILABLE):
                await self.renew()

    async def release(self) -> None:
        """Give the lease back (the connection closed)."""
        if self._renewer is None:
            return
        await stop_tasks(self._renewer)
        self._renewer = None
        try:
            await self.limiter.redis.zrem(self.key, self.member)
        except _UNAVAILABLE as exc:
            log.info("WebSocket lease not released; it expires", extra={"error": str(exc)[:200]})


__all__ = ["ConnectionSlot", "Quota", "RateLimitMetrics", "RateLimitedError", "RateLimiter"]
