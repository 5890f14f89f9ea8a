"""Agent validation through the orchestrator (the platform's Agent Management is behind it).

Before a conversation is created, ``AgentDirectory.ensure_usable`` asks
``GET {CONVERSATION_ORCHESTRATOR_URL}/agents/{agent_id}`` (header ``X-Tenant-ID``) whether the
agent exists and may take conversations. The contract:

* ``200`` with a JSON object: the agent exists; ``"usable": false`` (optional ``"reason"``)
  means it may not take conversations → ``422 agent-not-usable``;
* ``404`` or ``410``: no such agent → ``422 unknown-agent``;
* anything else, a timeout (``agent_validation_timeout_seconds``, 1 s by default) or a
  connection error is a failure: with ``agent_validation_required`` the request gets
  ``503 agent-validation-unavailable``; without it the conversation is created and a warning
  logged (availability over strictness).

Answers (both kinds) are cached per tenant and agent for ``CACHE_SECONDS``; an expired answer
is still used for ``STALE_SECONDS`` more when the orchestrator fails (stale-if-error).
Concurrent lookups of one agent share one request. A circuit breaker opens after
``FAILURE_THRESHOLD`` consecutive failures and then fails fast for ``OPEN_SECONDS`` (one probe
is let through after that), so an orchestrator outage costs the API one timeout, not one per
request.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from urllib.parse import quote

import httpx

from conversation_service.errors import ServiceUnavailableError, ValidationError

log = logging.getLogger(__name__)

CACHE_SECONDS: Final = 60.0
STALE_SECONDS: Final = 600.0
CACHE_ENTRIES: Final = 10_000
FAILURE_THRESHOLD: Final = 3
OPEN_SECONDS: Final = 30.0


class UnknownAgentError(ValidationError):
    """The orchestrator does not know the agent."""

    code = "unknown-agent"
    title = "Unknown agent"


class AgentNotUsableError(ValidationError):
    """The agent exists but may not take conversations (disabled, retired…)."""

    code = "agent-not-usable"
    title = "Agent cannot take conversations"


class AgentValidationUnavailableError(ServiceUnavailableError):
    """Validation is required and the orchestrator cannot answer."""

    code = "agent-validation-unavailable"
    title = "Agent validation unavailable"


class CircuitState(StrEnum):
    """Closed: calls go through. Open: fail fast. Half-open: one probe decides."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a cool-down and a single half-open probe."""

    def __init__(
        self,
        *,
        failure_threshold: int = FAILURE_THRESHOLD,
        open_seconds: float = OPEN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> CircuitState:
        """The current state (open turns half-open once the cool-down has passed)."""
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at < self.open_seconds:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def retry_after(self) -> int:
        """Seconds until a call may be tried again (0 when closed)."""
        if self._opened_at is None:
            return 0
        return max(1, round(self.open_seconds - (self._clock() - self._opened_at)))

    def allow(self) -> bool:
        """May a call be made now? In half-open state only one caller gets a yes."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN or self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        """A call worked: close the circuit."""
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        """A call failed: open after enough of them in a row (at once when probing)."""
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._probing = False


@dataclass(frozen=True, slots=True)
class AgentVerdict:
    """What the orchestrator said about an agent."""

    exists: bool
    usable: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Cached:
    verdict: AgentVerdict
    at: float


class _LookupFailedError(Exception):
    """The orchestrator could not give an answer (timeout, connection error, bad status)."""


class AgentDirectory:
    """Cached, circuit-broken agent checks against the orchestrator."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        required: bool,
        timeout: float,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.required = required
        self.timeout = timeout
        self.breaker = breaker or CircuitBreaker(clock=clock)
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], _Cached] = OrderedDict()
        self._in_flight: dict[tuple[str, str], asyncio.Future[AgentVerdict]] = {}

    async def ensure_usable(self, tenant_id: str, agent_id: str) -> None:
        """Return if the agent may take a conversation; raise a 422 or 503 problem if not."""
        verdict = await self.verdict(tenant_id, agent_id)
        if verdict is None:
            return
        if not verdict.exists:
            raise UnknownAgentError(
                f"agent {agent_id!r} is not known to the orchestrator",
                extra={"agent_id": agent_id},
            )
        if not verdict.usable:
            reason = f": {verdict.reason}" if verdict.reason else ""
            raise AgentNotUsableError(
                f"agent {agent_id!r} cannot take conversations{reason}",
                extra={"agent_id": agent_id},
            )

    async def verdict(self, tenant_id: str, agent_id: str) -> AgentVerdict | None:
        """The orchestrator's answer (cached), or None when it has none and none is required."""
        key = (tenant_id, agent_id)
        cached = self._cache.get(key)
        now = self._clock()
        if cached is not None and now - cached.at < CACHE_SECONDS:
            return cached.verdict
        try:
            verdict = await self._shared_lookup(key)
        except _LookupFailedError as exc:
            if cached is not None and now - cached.at < CACHE_SECONDS + STALE_SECONDS:
                return cached.verdict
            if self.required:
                raise AgentValidationUnavailableError(
                    f"cannot validate agent {agent_id!r}: {exc}",
                    headers={"Retry-After": str(self.breaker.retry_after() or 1)},
                ) from exc
            log.warning(
                "agent not validated; allowed because validation is not required",
                extra={"agent_id": agent_id, "error": str(exc)},
            )
            return None
        self._remember(key, verdict)
        return verdict

    async def _shared_lookup(self, key: tuple[str, str]) -> AgentVerdict:
        pending = self._in_flight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled, not the shared lookup
        future: asyncio.Future[AgentVerdict] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            verdict = await self._lookup(*key)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "exception never retrieved" if nobody waited
            raise
        else:
            future.set_result(verdict)
            return verdict
        finally:
            if self._in_flight.get(key) is future:
                del self._in_flight[key]

    async def _lookup(self, tenant_id: str, agent_id: str) -> AgentVerdict:
        if not self.breaker.allow():
            raise _LookupFailedError("the orchestrator is unavailable (circuit open)")
        url = f"{self.base_url}/agents/{quote(agent_id, safe='')}"
        try:
            response = await self.client.get(
                url, headers={"X-Tenant-ID": tenant_id}, timeout=self.timeout
            )
        except httpx.TimeoutException as exc:
            self.breaker.record_failure()
            raise _LookupFailedError("the orchestrator did not answer in time") from exc
        except httpx.HTTPError as exc:
            self.breaker.record_failure()
            raise _LookupFailedError(
                f"the orchestrator is unreachable ({type(exc).__name__})"
            ) from exc
        if response.status_code in (404, 410):
            self.breaker.record_success()
            return AgentVerdict(exists=False, usable=False)
        if response.status_code != 200:
            self.breaker.record_failure()
            raise _LookupFailedError(f"the orchestrator answered {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.breaker.record_failure()
            raise _LookupFailedError("the orchestrator answered with a body that is not JSON")
        self.breaker.record_success()
        reason = body.get("reason")
        return AgentVerdict(
            exists=True,
            usable=body.get("usable", True) is not False,
            reason=str(reason) if reason else None,
        )

    def _remember(self, key: tuple[str, str], verdict: AgentVerdict) -> None:
        self._cache[key] = _Cached(verdict, self._clock())
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
