"""Set-up calls to the service under test (not timed): create conversations, read a page."""

import uuid
from types import TracebackType
from typing import Any, Self

import httpx


class BenchError(RuntimeError):
    """The service answered a set-up or measured call with something unexpected."""


class ServiceApi:
    """The public API as the benchmark's user, through ``httpx``."""

    def __init__(self, base_url: str, token: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    async def create_conversation(self, agent_id: str = "bench-agent") -> uuid.UUID:
        """Create a conversation owned by the benchmark's user."""
        response = await self._client.post("/api/v1/conversations", json={"agent_id": agent_id})
        if response.status_code != 201:
            raise BenchError(f"create conversation: {response.status_code} {response.text}")
        return uuid.UUID(response.json()["id"])

    async def append(self, conversation_id: uuid.UUID, content: str) -> None:
        """Append a user message."""
        response = await self._client.post(
            f"/api/v1/conversations/{conversation_id}/messages", json={"content": content}
        )
        if response.status_code != 201:
            raise BenchError(f"append: {response.status_code} {response.text}")

    async def newest_page(self, conversation_id: uuid.UUID, limit: int) -> dict[str, Any]:
        """The newest ``limit`` messages of a conversation, as the API returns them."""
        response = await self._client.get(
            f"/api/v1/conversations/{conversation_id}/messages",
            params={"order": "desc", "limit": limit},
        )
        if response.status_code != 200:
            raise BenchError(f"list messages: {response.status_code} {response.text}")
        page: dict[str, Any] = response.json()
        return page
