"""What the sync and async clients share: credentials, retry policy, answer handling."""

import random
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import httpx

from conversation_service_client._calls import Call
from conversation_service_client.errors import ConversationServiceError, problem_error

T = TypeVar("T")
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER: Final = 30.0
USER_AGENT: Final = "conversation-service-client/0.1"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a call that is safe to repeat.

    Connection errors, timeouts, 429 and 502/503/504 are retried with capped, jittered
    exponential backoff; ``Retry-After`` wins when the service sends it (up to 30 s).
    """

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        if response is not None:
            after = response.headers.get("Retry-After")
            if after is not None:
                try:
                    return min(max(float(after), 0.0), MAX_RETRY_AFTER)
                except ValueError:
                    pass
        backoff: float = min(self.max_delay, self.base_delay * 2**attempt)
        return backoff * (0.5 + random.random() / 2)


NO_RETRY: Final = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class Credentials:
    """A user's JWT for ``/api/v1`` and a service key for ``/internal/v1`` (either optional)."""

    token: str | None = None
    service_key: str | None = None

    def headers(self, call: Call[Any]) -> dict[str, str]:
        secret = self.service_key if call.internal else self.token
        if secret is None:
            needed = "service_key" if call.internal else "token"
            raise ConversationServiceError(f"{call.method} {call.path} needs the client's {needed}")
        return {"Authorization": f"Bearer {secret}", **call.headers}


def should_retry(
    call: Call[Any], attempt: int, policy: RetryPolicy, response: httpx.Response | None
) -> bool:
    """Whether a failed attempt (``response`` None: no answer) is tried again.

    A 409 to a call with an ``Idempotency-Key`` means an earlier attempt whose answer was lost
    is still being processed (``idempotency-key-in-flight``): the retry gets its answer.
    """
    if not call.retry or attempt + 1 >= policy.attempts:
        return False
    if response is None:
        return True
    if response.status_code == 409 and "Idempotency-Key" in call.headers:
        return problem_error(response).code == "idempotency-key-in-flight"
    return response.status_code in RETRY_STATUSES


def answer(call: Call[T], response: httpx.Response) -> T:
    """The parsed answer, or the problem raised as its typed exception."""
    if response.is_error:
        raise problem_error(response)
    return call.parse(response.json() if response.content else None)


def base_urls(base_url: str) -> str:
    return base_url.rstrip("/")
