"""``AsyncConversationServiceClient``: the service's API over ``httpx.AsyncClient``."""

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from conversation_service_client import _calls as calls
from conversation_service_client import models
from conversation_service_client._base import (
    NO_RETRY,
    USER_AGENT,
    Credentials,
    RetryPolicy,
    answer,
    should_retry,
)
from conversation_service_client._calls import Call, Id, Page
from conversation_service_client.streaming import Event, Transport, astream

T = TypeVar("T")


class AsyncConversationServiceClient:
    """Async client. ``token``: a user's JWT (``/api/v1``); ``service_key``: an orchestrator's
    key (``/internal/v1``). Either may be omitted; a call that needs the missing one raises.

    Use as ``async with AsyncConversationServiceClient(url, token=…) as client:``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        service_key: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = Credentials(token, service_key)
        self.retry = retry or RetryPolicy()
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def send(self, call: Call[T], *, retry: RetryPolicy | None = None) -> T:
        """Send one call, retrying it when it is safe to (see ``RetryPolicy``)."""
        policy = retry or (self.retry if call.retry else NO_RETRY)
        headers = self.credentials.headers(call)
        attempt = 0
        while True:
            try:
                response = await self.http.request(
                    call.method, call.path, params=call.params, json=call.json, headers=headers
                )
            except httpx.TransportError:
                if not should_retry(call, attempt, policy, None):
                    raise
                await asyncio.sleep(policy.delay(attempt, None))
            else:
                if response.is_error and should_retry(call, attempt, policy, response):
                    await asyncio.sleep(policy.delay(attempt, response))
                else:
                    return answer(call, response)
            attempt += 1

    async def _pages(
        self, first: Callable[[str | None], Call[Page[T]]], next_of: Callable[[Page[T]], Any]
    ) -> AsyncIterator[T]:
        page = await self.send(first(None))
        while True:
            for item in page.data:
                yield item
            if not page.has_more:
                return
            page = await self.send(first(next_of(page)))

    # -- conversations and messages (user token) ----------------------------------------

    async def create_conversation(self, body: Any = None, **fields: Any) -> models.ConversationOut:
        return await self.send(calls.create_conversation(body, **fields))

    async def get_conversation(self, conversation_id: Id) -> models.ConversationOut:
        return await self.send(calls.get_conversation(conversation_id))

    async def update_conversation(
        self, conversation_id: Id, body: Any = None, **fields: Any
    ) -> models.ConversationOut:
        return await self.send(calls.update_conversation(conversation_id, body, **fields))

    async def archive_conversation(self, conversation_id: Id) -> models.ConversationOut:
        return await self.send(calls.archive_conversation(conversation_id))

    async def delete_conversation(self, conversation_id: Id) -> None:
        await self.send(calls.delete_conversation(conversation_id))

    def iter_conversations(self, **filters: Any) -> AsyncIterator[models.ConversationOut]:
        """Every conversation of the user matching ``filters``, page after page."""
        return self._pages(
            lambda cursor: calls.list_conversations(cursor, **filters), lambda p: p.next_cursor
        )

    async def append_message(
        self,
        conversation_id: Id,
        content: str = "",
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> models.MessageOut:
        """Append a user message; every retry carries the same ``Idempotency-Key``, so a lost
        answer never appends twice (a fresh key is made when none is given)."""
        key = idempotency_key or str(uuid.uuid4())
        body = {"content": content, **fields}
        return await self.send(calls.append_message(conversation_id, key, body))

    def iter_messages(
        self, conversation_id: Id, *, page_size: int | None = None, **options: Any
    ) -> AsyncIterator[models.MessageOut]:
        """Every message (``after_seq``, ``before_seq``, ``order`` narrow it), page by page."""
        return self._pages(
            lambda cursor: calls.list_messages(conversation_id, cursor, limit=page_size, **options),
            lambda p: p.next_cursor,
        )

    async def get_message(self, conversation_id: Id, message_id: Id) -> models.MessageOut:
        return await self.send(calls.get_message(conversation_id, message_id))

    async def update_message(
        self, conversation_id: Id, message_id: Id, body: Any = None, **fields: Any
    ) -> models.MessageOut:
        return await self.send(calls.update_message(conversation_id, message_id, body, **fields))

    async def delete_message(self, conversation_id: Id, message_id: Id) -> None:
        await self.send(calls.delete_message(conversation_id, message_id))

    def iter_sessions(
        self, conversation_id: Id, *, page_size: int | None = None
    ) -> AsyncIterator[models.SessionOut]:
        return self._pages(
            lambda cursor: calls.list_sessions(conversation_id, cursor, page_size),
            lambda p: p.next_cursor,
        )

    async def start_session(
        self, conversation_id: Id, body: Any = None, **fields: Any
    ) -> models.SessionOut:
        return await self.send(calls.start_session(conversation_id, body, **fields))

    async def end_session(self, conversation_id: Id) -> models.SessionOut:
        return await self.send(calls.end_session(conversation_id))

    async def summary(self, conversation_id: Id) -> models.SummaryOut:
        return await self.send(calls.summary(conversation_id))

    async def get_job(self, job_id: Id) -> models.JobOut:
        return await self.send(calls.get_job(job_id))

    def stream(
        self,
        conversation_id: Id,
        *,
        after: str | None = None,
        transports: tuple[Transport, ...] = ("websocket", "sse"),
        max_reconnects: int | None = None,
    ) -> AsyncGenerator[Event, None]:
        """The conversation's events after ``after`` (None: from now on), across disconnects.

        Endless: stop iterating (or close the generator) to disconnect.
        """
        token = self.credentials.token
        if token is None:
            raise ValueError("stream() needs the client's token")
        return astream(
            self.http,
            self.base_url,
            token,
            conversation_id,
            after=after,
            transports=transports,
            max_reconnects=max_reconnects,
        )

    # -- the orchestrator's internal calls (service key) --------------------------------

    async def agent_conversation(self, conversation_id: Id) -> models.ConversationOut:
        return await self.send(calls.agent_conversation(conversation_id))

    def iter_all_conversations(
        self, tenant: str, **filters: Any
    ) -> AsyncIterator[models.ConversationOut]:
        """Every conversation of ``tenant`` matching ``filters`` (user, workflow_id…)."""
        return self._pages(
            lambda cursor: calls.list_all_conversations(cursor, tenant=tenant, **filters),
            lambda p: p.next_cursor,
        )

    async def context_window(
        self, conversation_id: Id, **options: Any
    ) -> models.ConversationMemory:
        """The window for the agent's next turn (``strategy``, ``max_tokens``, ``last_n``…)."""
        return await self.send(calls.context_window(conversation_id, **options))

    async def openai_context_window(
        self, conversation_id: Id, *, for_agent: str | None = None, **options: Any
    ) -> models.OpenAIContext:
        """The window as OpenAI chat messages (tool calls included)."""
        return await self.send(calls.openai_context_window(conversation_id, for_agent, **options))

    async def tracked_context(self, conversation_id: Id) -> models.TrackedContextOut:
        return await self.send(calls.tracked_context(conversation_id))

    async def patch_tracked_context(
        self,
        conversation_id: Id,
        patch: Mapping[str, Any],
        *,
        if_match: str | None = None,
        changed_by: str | None = None,
    ) -> models.TrackedContextOut:
        return await self.send(
            calls.patch_tracked_context(conversation_id, patch, if_match, changed_by)
        )

    def iter_tracked_context_history(
        self, conversation_id: Id, *, page_size: int | None = None
    ) -> AsyncIterator[models.TrackedContextVersionOut]:
        """Every version of the tracked context, newest first."""
        return self._pages(
            lambda before: calls.tracked_context_history(
                conversation_id, int(before) if before else None, page_size
            ),
            lambda p: str(p.data[-1].version),
        )

    async def create_agent_message(
        self, conversation_id: Id, body: Any = None, **fields: Any
    ) -> models.MessageOut:
        """An assistant, tool or system message (``status="streaming"``: then deltas)."""
        return await self.send(calls.create_agent_message(conversation_id, body, **fields))

    async def append_deltas(
        self, conversation_id: Id, message_id: Id, chunks: Sequence[tuple[int, str]]
    ) -> models.DeltasAccepted:
        """Indexed chunks of a streaming message (a re-sent index is ignored)."""
        return await self.send(calls.append_deltas(conversation_id, message_id, chunks))

    async def complete_message(
        self,
        conversation_id: Id,
        message_id: Id,
        *,
        content: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> models.StreamResult:
        return await self.send(
            calls.complete_message(conversation_id, message_id, content, metadata)
        )

    async def fail_message(
        self, conversation_id: Id, message_id: Id, error: str
    ) -> models.StreamResult:
        return await self.send(calls.fail_message(conversation_id, message_id, error))

    async def request_task(self, conversation_id: Id, kind: str, **fields: Any) -> models.JobOut:
        """A background task (``summarize``…); its outcome comes as a ``task.*`` callback."""
        return await self.send(calls.request_task(conversation_id, kind=kind, **fields))

    async def agent_job(self, job_id: Id) -> models.JobOut:
        return await self.send(calls.agent_job(job_id))

    async def create_workflow_conversation(
        self, *, idempotency_key: str | None = None, **fields: Any
    ) -> models.WorkflowConversationOut:
        """A conversation for ``tenant``/``user``, opened by a workflow (one key per retry)."""
        key = idempotency_key or str(uuid.uuid4())
        return await self.send(calls.create_workflow_conversation(key, None, **fields))

    async def hand_off(
        self,
        conversation_id: Id,
        to_agent_id: str,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> models.HandoffOut:
        """Pass the conversation to another agent (one ``Idempotency-Key`` for every retry)."""
        key = idempotency_key or str(uuid.uuid4())
        call = calls.hand_off(conversation_id, key, None, to_agent_id=to_agent_id, **fields)
        return await self.send(call)

    async def session_context(self, session_id: Id) -> models.SessionContext:
        return await self.send(calls.session_context(session_id))

    async def patch_session_context(
        self, session_id: Id, body: Any = None, **fields: Any
    ) -> models.SessionContext:
        return await self.send(calls.patch_session_context(session_id, body, **fields))

    async def callback_delivery(self, delivery_id: Id) -> models.CallbackDeliveryOut:
        """A callback's delivery and its attempts (status, latency, error)."""
        return await self.send(calls.callback_delivery(delivery_id))

    async def redeliver_callback(self, delivery_id: Id) -> models.RedeliveryOut:
        return await self.send(calls.redeliver_callback(delivery_id))
