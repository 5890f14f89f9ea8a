"""``ConversationServiceClient``: the service's API over ``httpx.Client``.

Generated from ``aio.py`` by ``clients/python/generate_models.py``: edit that file."""

import time
import uuid
from collections.abc import Generator, Iterator, Callable, Mapping, Sequence
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
from conversation_service_client.streaming import Event, Transport, stream

T = TypeVar("T")


class ConversationServiceClient:
    """Blocking client. ``token``: a user's JWT (``/api/v1``); ``service_key``: an orchestrator's
    key (``/internal/v1``). Either may be omitted; a call that needs the missing one raises.

    Use as ``with ConversationServiceClient(url, token=…) as client:``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        service_key: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = Credentials(token, service_key)
        self.retry = retry or RetryPolicy()
        self._own_http = http is None
        self.http = http or httpx.Client(
            base_url=self.base_url, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def send(self, call: Call[T], *, retry: RetryPolicy | None = None) -> T:
        """Send one call, retrying it when it is safe to (see ``RetryPolicy``)."""
        policy = retry or (self.retry if call.retry else NO_RETRY)
        headers = self.credentials.headers(call)
        attempt = 0
        while True:
            try:
                response = self.http.request(
                    call.method, call.path, params=call.params, json=call.json, headers=headers
                )
            except httpx.TransportError:
                if not should_retry(call, attempt, policy, None):
                    raise
                time.sleep(policy.delay(attempt, None))
            else:
                if response.is_error and should_retry(call, attempt, policy, response):
                    time.sleep(policy.delay(attempt, response))
                else:
                    return answer(call, response)
            attempt += 1

    def _pages(
        self, first: Callable[[str | None], Call[Page[T]]], next_of: Callable[[Page[T]], Any]
    ) -> Iterator[T]:
        page = self.send(first(None))
        while True:
            for item in page.data:
                yield item
            if not page.has_more:
                return
            page = self.send(first(next_of(page)))

    # -- conversations and messages (user token) ----------------------------------------

    def create_conversation(self, body: Any = None, **fields: Any) -> models.ConversationOut:
        return self.send(calls.create_conversation(body, **fields))

    def get_conversation(self, conversation_id: Id) -> models.ConversationOut:
        return self.send(calls.get_conversation(conversation_id))

    def update_conversation(
        self, conversation_id: Id, body: Any = None, **fields: Any
    ) -> models.ConversationOut:
        return self.send(calls.update_conversation(conversation_id, body, **fields))

    def archive_conversation(self, conversation_id: Id) -> models.ConversationOut:
        return self.send(calls.archive_conversation(conversation_id))

    def delete_conversation(self, conversation_id: Id) -> None:
        self.send(calls.delete_conversation(conversation_id))

    def iter_conversations(self, **filters: Any) -> Iterator[models.ConversationOut]:
        """Every conversation of the user matching ``filters``, page after page."""
        return self._pages(
            lambda cursor: calls.list_conversations(cursor, **filters), lambda p: p.next_cursor
        )

    def append_message(
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
        return self.send(calls.append_message(conversation_id, key, body))

    def iter_messages(
        self, conversation_id: Id, *, page_size: int | None = None, **options: Any
    ) -> Iterator[models.MessageOut]:
        """Every message (``after_seq``, ``before_seq``, ``order`` narrow it), page by page."""
        return self._pages(
            lambda cursor: calls.list_messages(conversation_id, cursor, limit=page_size, **options),
            lambda p: p.next_cursor,
        )

    def get_message(self, conversation_id: Id, message_id: Id) -> models.MessageOut:
        return self.send(calls.get_message(conversation_id, message_id))

    def update_message(
        self, conversation_id: Id, message_id: Id, body: Any = None, **fields: Any
    ) -> models.MessageOut:
        return self.send(calls.update_message(conversation_id, message_id, body, **fields))

    def delete_message(self, conversation_id: Id, message_id: Id) -> None:
        self.send(calls.delete_message(conversation_id, message_id))

    def iter_sessions(
        self, conversation_id: Id, *, page_size: int | None = None
    ) -> Iterator[models.SessionOut]:
        return self._pages(
            lambda cursor: calls.list_sessions(conversation_id, cursor, page_size),
            lambda p: p.next_cursor,
        )

    def start_session(
        self, conversation_id: Id, body: Any = None, **fields: Any
    ) -> models.SessionOut:
        return self.send(calls.start_session(conversation_id, body, **fields))

    def end_session(self, conversation_id: Id) -> models.SessionOut:
        return self.send(calls.end_session(conversation_id))

    def summary(self, conversation_id: Id) -> models.SummaryOut:
        return self.send(calls.summary(conversation_id))

    def get_job(self, job_id: Id) -> models.JobOut:
        return self.send(calls.get_job(job_id))

    def stream(
        self,
        conversation_id: Id,
        *,
        after: str | None = None,
        transports: tuple[Transport, ...] = ("websocket", "sse"),
        max_reconnects: int | None = None,
    ) -> Generator[Event, None, None]:
        """The conversation's events after ``after`` (None: from now on), across disconnects.

        Endless: stop iterating (or close the generator) to disconnect.
        """
        token = self.credentials.token
        if token is None:
            raise ValueError("stream() needs the client's token")
        return stream(
            self.http,
            self.base_url,
            token,
            conversation_id,
            after=after,
            transports=transports,
            max_reconnects=max_reconnects,
        )

    # -- the orchestrator's internal calls (service key) --------------------------------

    def agent_conversation(self, conversation_id: Id) -> models.ConversationOut:
        return self.send(calls.agent_conversation(conversation_id))

    def iter_all_conversations(
        self, tenant: str, **filters: Any
    ) -> Iterator[models.ConversationOut]:
        """Every conversation of ``tenant`` matching ``filters`` (user, workflow_id…)."""
        return self._pages(
            lambda cursor: calls.list_all_conversations(cursor, tenant=tenant, **filters),
            lambda p: p.next_cursor,
        )

    def context_window(
        self, conversation_id: Id, **options: Any
    ) -> models.ConversationMemory:
        """The window for the agent's next turn (``strategy``, ``max_tokens``, ``last_n``…)."""
        return self.send(calls.context_window(conversation_id, **options))

    def openai_context_window(
        self, conversation_id: Id, *, for_agent: str | None = None, **options: Any
    ) -> models.OpenAIContext:
        """The window as OpenAI chat messages (tool calls included)."""
        return self.send(calls.openai_context_window(conversation_id, for_agent, **options))

    def tracked_context(self, conversation_id: Id) -> models.TrackedContextOut:
        return self.send(calls.tracked_context(conversation_id))

    def patch_tracked_context(
        self,
        conversation_id: Id,
        patch: Mapping[str, Any],
        *,
        if_match: str | None = None,
        changed_by: str | None = None,
    ) -> models.TrackedContextOut:
        return self.send(
            calls.patch_tracked_context(conversation_id, patch, if_match, changed_by)
        )

    def iter_tracked_context_history(
        self, conversation_id: Id, *, page_size: int | None = None
    ) -> Iterator[models.TrackedContextVersionOut]:
        """Every version of the tracked context, newest first."""
        return self._pages(
            lambda before: calls.tracked_context_history(
                conversation_id, int(before) if before else None, page_size
            ),
            lambda p: str(p.data[-1].version),
        )

    def create_agent_message(
        self, conversation_id: Id, body: Any = None, **fields: Any
    ) -> models.MessageOut:
        """An assistant, tool or system message (``status="streaming"``: then deltas)."""
        return self.send(calls.create_agent_message(conversation_id, body, **fields))

    def append_deltas(
        self, conversation_id: Id, message_id: Id, chunks: Sequence[tuple[int, str]]
    ) -> models.DeltasAccepted:
        """Indexed chunks of a streaming message (a re-sent index is ignored)."""
        return self.send(calls.append_deltas(conversation_id, message_id, chunks))

    def complete_message(
        self,
        conversation_id: Id,
        message_id: Id,
        *,
        content: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> models.StreamResult:
        return self.send(
            calls.complete_message(conversation_id, message_id, content, metadata)
        )

    def fail_message(
        self, conversation_id: Id, message_id: Id, error: str
    ) -> models.StreamResult:
        return self.send(calls.fail_message(conversation_id, message_id, error))

    def request_task(self, conversation_id: Id, kind: str, **fields: Any) -> models.JobOut:
        """A background task (``summarize``…); its outcome comes as a ``task.*`` callback."""
        return self.send(calls.request_task(conversation_id, kind=kind, **fields))

    def agent_job(self, job_id: Id) -> models.JobOut:
        return self.send(calls.agent_job(job_id))

    def create_workflow_conversation(
        self, *, idempotency_key: str | None = None, **fields: Any
    ) -> models.WorkflowConversationOut:
        """A conversation for ``tenant``/``user``, opened by a workflow (one key per retry)."""
        key = idempotency_key or str(uuid.uuid4())
        return self.send(calls.create_workflow_conversation(key, None, **fields))

    def hand_off(
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
        return self.send(call)

    def session_context(self, session_id: Id) -> models.SessionContext:
        return self.send(calls.session_context(session_id))

    def patch_session_context(
        self, session_id: Id, body: Any = None, **fields: Any
    ) -> models.SessionContext:
        return self.send(calls.patch_session_context(session_id, body, **fields))

    def callback_delivery(self, delivery_id: Id) -> models.CallbackDeliveryOut:
        """A callback's delivery and its attempts (status, latency, error)."""
        return self.send(calls.callback_delivery(delivery_id))

    def redeliver_callback(self, delivery_id: Id) -> models.RedeliveryOut:
        return self.send(calls.redeliver_callback(delivery_id))
