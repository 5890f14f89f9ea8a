"""Quotas and what a refusal looks like: limits in the ``limits`` notation, pseudonymous counter
keys, the 429 problem with ``Retry-After`` and ``RateLimit-*`` headers, and the limiter's metrics.
"""

import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Final

from limits import RateLimitItem, parse_many
from prometheus_client import CollectorRegistry, Counter

from conversation_service.errors import ServiceError

# Counter keys memoised (local fixed-window blocks look one up per request).
MAX_DIGESTS: Final = 10_000


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


@functools.lru_cache(maxsize=MAX_DIGESTS)
def digest(*parts: str) -> str:
    # Pseudonymous keys: Redis never holds a tenant or user id in clear.
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


def refusal(quota: Quota, item: RateLimitItem, reset_after: float) -> RateLimitedError:
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
