"""A thin client of the service's internal API (``/internal/v1``), authenticated by service key.

Calls that are safe to repeat (reads, indexed deltas, complete, fail) are retried a few times
on connection errors and 502/503/504; creating a message is not, since a repeat would create a
second one.
"""

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, Final

import httpx

RETRY_STATUSES: Final = frozenset({502, 503, 504})
RETRY_DELAYS: Final = (0.1, 0.3, 1.0)


class ServiceError(Exception):
    """The service answered with an error (``status`` and the problem document)."""

    def __init__(self, status: int, problem: Any) -> None:
        super().__init__(f"HTTP {status}: {problem}")
        self.status = status
        self.problem = problem


class ServiceClient:
    """The orchestrator's side of the internal API."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    @staticmethod
    def build_http(base_url: str, service_key: str, timeout: float) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` for the service (keep-alive, bearer service key)."""
        return httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/internal/v1",
            headers={"Authorization": f"Bearer {service_key}"},
            timeout=timeout,
        )

    async def _call(self, method: str, path: str, *, json: Any = None, retry: bool = True) -> Any:
        delays = RETRY_DELAYS if retry else ()
        for attempt in range(len(delays) + 1):
            try:
                response = await self.http.request(method, path, json=json)
            except httpx.TransportError:
                if attempt == len(delays):
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt == len(delays):
                    if response.is_error:
                        try:
                            problem: Any = response.json()
                        except ValueError:
                            problem = response.text
                        raise ServiceError(response.status_code, problem)
                    return response.json() if response.content else None
            await asyncio.sleep(delays[attempt])
        raise AssertionError("unreachable")

    async def conversation(self, conversation_id: str | uuid.UUID) -> dict[str, Any]:
        """``GET /conversations/{id}``: the conversation (its ``agent_id``)."""
        result: dict[str, Any] = await self._call("GET", f"/conversations/{conversation_id}")
        return result

    async def context(
        self, conversation_id: str | uuid.UUID, leaf: str | None = None
    ) -> dict[str, Any]:
        """``GET /conversations/{id}/context``: the window (messages, summary, session…), along
        the path to ``leaf`` when given (the message being answered), else the active path."""
        query = f"?leaf={leaf}" if leaf else ""
        result: dict[str, Any] = await self._call(
            "GET", f"/conversations/{conversation_id}/context{query}"
        )
        return result

    async def patch_tracked_context(
        self, conversation_id: str | uuid.UUID, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """``PATCH /conversations/{id}/tracked-context``: JSON merge patch of what we learnt."""
        result: dict[str, Any] = await self._call(
            "PATCH", f"/conversations/{conversation_id}/tracked-context", json=patch
        )
        return result

    async def create_message(
        self,
        conversation_id: str | uuid.UUID,
        *,
        status: str = "streaming",
        content: str = "",
        parent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST /conversations/{id}/messages``: an assistant message (streaming: empty)."""
        body = {
            "role": "assistant",
            "status": status,
            "content": content,
            "parent_id": parent_id,
            "metadata": metadata or {},
        }
        result: dict[str, Any] = await self._call(
            "POST", f"/conversations/{conversation_id}/messages", json=body, retry=False
        )
        return result

    async def deltas(
        self,
        conversation_id: str | uuid.UUID,
        message_id: str | uuid.UUID,
        chunks: Sequence[tuple[int, str]],
    ) -> dict[str, Any]:
        """``POST …/messages/{mid}/deltas``: indexed chunks (a re-sent index is ignored)."""
        body = {"deltas": [{"index": index, "text": text} for index, text in chunks]}
        result: dict[str, Any] = await self._call(
            "POST", f"/conversations/{conversation_id}/messages/{message_id}/deltas", json=body
        )
        return result

    async def complete(
        self,
        conversation_id: str | uuid.UUID,
        message_id: str | uuid.UUID,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST …/messages/{mid}/complete``: the content is the deltas joined."""
        result: dict[str, Any] = await self._call(
            "POST",
            f"/conversations/{conversation_id}/messages/{message_id}/complete",
            json={"metadata": metadata} if metadata else {},
        )
        return result

    async def fail(
        self, conversation_id: str | uuid.UUID, message_id: str | uuid.UUID, error: str
    ) -> dict[str, Any]:
        """``POST …/messages/{mid}/fail``: the reply failed (partial content is kept)."""
        result: dict[str, Any] = await self._call(
            "POST",
            f"/conversations/{conversation_id}/messages/{message_id}/fail",
            json={"error": error[:2000] or "failed"},
        )
        return result
