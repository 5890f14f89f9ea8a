"""The orchestrator's side of the internal API (``/internal/v1``), on the service's Python client.

``conversation-service-client`` does the HTTP: the service key, typed models, problem details
as exceptions, and retries of what is safe to repeat (reads, indexed deltas, complete, fail,
merge patches) on connection errors, 429 and 502/503/504. Creating a message is not retried,
since a repeat would create a second one. The demo agent works on plain JSON, so answers are
handed over as dicts.
"""

import uuid
from collections.abc import Sequence
from typing import Any

from conversation_service_client import AsyncConversationServiceClient, ProblemError

ServiceError = ProblemError
"""The service refused a call (``status``, ``problem``): a typed problem-details exception."""


class ServiceClient:
    """The internal calls the reference orchestrator makes."""

    def __init__(self, client: AsyncConversationServiceClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, base_url: str, service_key: str, timeout: float) -> "ServiceClient":
        """A client of the service at ``base_url`` (keep-alive, bearer service key)."""
        return cls(
            AsyncConversationServiceClient(base_url, service_key=service_key, timeout=timeout)
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def conversation(self, conversation_id: str | uuid.UUID) -> dict[str, Any]:
        """``GET /conversations/{id}``: the conversation (its ``agent_id``)."""
        found = await self.client.agent_conversation(conversation_id)
        return found.model_dump(mode="json")

    async def context(
        self, conversation_id: str | uuid.UUID, leaf: str | None = None
    ) -> dict[str, Any]:
        """``GET /conversations/{id}/context``: the window (messages, summary, session…), along
        the path to ``leaf`` when given (the message being answered), else the active path."""
        options = {"leaf": leaf} if leaf else {}
        window = await self.client.context_window(conversation_id, **options)
        return window.model_dump(mode="json")

    async def patch_tracked_context(
        self, conversation_id: str | uuid.UUID, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """``PATCH /conversations/{id}/tracked-context``: JSON merge patch of what we learnt."""
        result = await self.client.patch_tracked_context(conversation_id, patch)
        return result.model_dump(mode="json")

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
        created = await self.client.create_agent_message(
            conversation_id,
            role="assistant",
            status=status,
            content=content,
            parent_id=parent_id,
            metadata=metadata or {},
        )
        return created.model_dump(mode="json")

    async def deltas(
        self,
        conversation_id: str | uuid.UUID,
        message_id: str | uuid.UUID,
        chunks: Sequence[tuple[int, str]],
    ) -> dict[str, Any]:
        """``POST …/messages/{mid}/deltas``: indexed chunks (a re-sent index is ignored)."""
        accepted = await self.client.append_deltas(conversation_id, message_id, chunks)
        return accepted.model_dump(mode="json")

    async def complete(
        self,
        conversation_id: str | uuid.UUID,
        message_id: str | uuid.UUID,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST …/messages/{mid}/complete``: the content is the deltas joined."""
        result = await self.client.complete_message(conversation_id, message_id, metadata=metadata)
        return result.model_dump(mode="json")

    async def fail(
        self, conversation_id: str | uuid.UUID, message_id: str | uuid.UUID, error: str
    ) -> dict[str, Any]:
        """``POST …/messages/{mid}/fail``: the reply failed (partial content is kept)."""
        result = await self.client.fail_message(
            conversation_id, message_id, error[:2000] or "failed"
        )
        return result.model_dump(mode="json")

    async def handoff(
        self,
        conversation_id: str | uuid.UUID,
        to_agent_id: str,
        *,
        from_agent_id: str,
        reason: str,
        context: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST /conversations/{id}/handoff``: another agent takes the conversation over.

        Retried with one ``Idempotency-Key``: a repeat returns the first answer instead of the
        409 that ``from_agent_id`` would give once the handoff is applied.
        """
        moved = await self.client.hand_off(
            conversation_id,
            to_agent_id,
            from_agent_id=from_agent_id,
            reason=reason,
            context=context,
        )
        return moved.model_dump(mode="json")
