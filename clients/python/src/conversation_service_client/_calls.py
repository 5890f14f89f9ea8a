"""Every HTTP call the clients make, as data: method, path, body, and how to read the answer.

The sync and async clients only differ in how they send a ``Call``; building the request and
parsing the response is here, once. Bodies are validated by the generated models before they
leave, so a malformed request fails in the caller's process with pydantic's message.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel

from conversation_service_client import models

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Id = str | UUID
PUBLIC = "/api/v1"
INTERNAL = "/internal/v1"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the parser of its successful answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    internal: bool = False
    # Safe to send again after a lost answer or a 502/503/504 (reads, idempotent writes).
    retry: bool = False


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a keyset-paginated list."""

    data: list[T]
    has_more: bool
    next_cursor: str | None


def _model(kind: type[M]) -> Callable[[Any], M]:
    return kind.model_validate


def _page(kind: type[M]) -> Callable[[Any], Page[M]]:
    def parse(body: Any) -> Page[M]:
        return Page(
            data=[kind.model_validate(item) for item in body["data"]],
            has_more=bool(body["has_more"]),
            next_cursor=body.get("next_cursor"),
        )

    return parse


def _none(body: Any) -> None:
    return None


def _body(
    schema: type[BaseModel], value: BaseModel | Mapping[str, Any] | None, /, **fields: Any
) -> Any:
    """``value`` (a model or a mapping) and ``fields``, validated by ``schema``, as JSON."""
    if isinstance(value, BaseModel):
        model = value
    else:
        model = schema.model_validate({**(value or {}), **fields})
    return model.model_dump(mode="json", exclude_unset=True, by_alias=True)


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the ones left at None."""
    return {key: value for key, value in values.items() if value is not None}


# -- public API (user JWT) ------------------------------------------------------------------


def create_conversation(body: Any = None, **fields: Any) -> Call[models.ConversationOut]:
    json = _body(models.ConversationCreate, body, **fields)
    return Call("POST", f"{PUBLIC}/conversations", _model(models.ConversationOut), json=json)


def list_conversations(cursor: str | None, **filters: Any) -> Call[Page[models.ConversationOut]]:
    params = _params(cursor=cursor, **filters)
    return Call("GET", f"{PUBLIC}/conversations", _page(models.ConversationOut), params, retry=True)


def get_conversation(cid: Id) -> Call[models.ConversationOut]:
    path = f"{PUBLIC}/conversations/{cid}"
    return Call("GET", path, _model(models.ConversationOut), retry=True)


def update_conversation(cid: Id, body: Any = None, **fields: Any) -> Call[models.ConversationOut]:
    json = _body(models.ConversationUpdate, body, **fields)
    path = f"{PUBLIC}/conversations/{cid}"
    return Call("PATCH", path, _model(models.ConversationOut), json=json, retry=True)


def archive_conversation(cid: Id) -> Call[models.ConversationOut]:
    path = f"{PUBLIC}/conversations/{cid}/archive"
    return Call("POST", path, _model(models.ConversationOut), retry=True)


def delete_conversation(cid: Id) -> Call[None]:
    return Call("DELETE", f"{PUBLIC}/conversations/{cid}", _none, retry=True)


def append_message(
    cid: Id, idempotency_key: str, body: Any = None, **fields: Any
) -> Call[models.MessageOut]:
    # One Idempotency-Key for every attempt: a repeat returns the first answer, adds nothing.
    return Call(
        "POST",
        f"{PUBLIC}/conversations/{cid}/messages",
        _model(models.MessageOut),
        json=_body(models.MessageCreate, body, **fields),
        headers={"Idempotency-Key": idempotency_key},
        retry=True,
    )


def list_messages(
    cid: Id,
    cursor: str | None,
    *,
    after_seq: int | None = None,
    before_seq: int | None = None,
    order: Literal["asc", "desc"] | None = None,
    limit: int | None = None,
) -> Call[Page[models.MessageOut]]:
    params = _params(
        cursor=cursor, after_seq=after_seq, before_seq=before_seq, order=order, limit=limit
    )
    if cursor is not None:  # the cursor carries the position and order
        params = _params(cursor=cursor, limit=limit)
    path = f"{PUBLIC}/conversations/{cid}/messages"
    return Call("GET", path, _page(models.MessageOut), params, retry=True)


def get_message(cid: Id, mid: Id) -> Call[models.MessageOut]:
    path = f"{PUBLIC}/conversations/{cid}/messages/{mid}"
    return Call("GET", path, _model(models.MessageOut), retry=True)


def delete_message(cid: Id, mid: Id) -> Call[None]:
    return Call("DELETE", f"{PUBLIC}/conversations/{cid}/messages/{mid}", _none, retry=True)


def list_sessions(cid: Id, cursor: str | None, limit: int | None) -> Call[Page[models.SessionOut]]:
    path = f"{PUBLIC}/conversations/{cid}/sessions"
    params = _params(cursor=cursor, limit=limit)
    return Call("GET", path, _page(models.SessionOut), params, retry=True)


def start_session(cid: Id, body: Any = None, **fields: Any) -> Call[models.SessionOut]:
    json = _body(models.SessionStart, body, **fields)
    path = f"{PUBLIC}/conversations/{cid}/sessions"
    return Call("POST", path, _model(models.SessionOut), json=json)


def end_session(cid: Id) -> Call[models.SessionOut]:
    path = f"{PUBLIC}/conversations/{cid}/sessions/current/end"
    return Call("POST", path, _model(models.SessionOut), retry=True)


def summary(cid: Id) -> Call[models.SummaryOut]:
    path = f"{PUBLIC}/conversations/{cid}/summary"
    return Call("GET", path, _model(models.SummaryOut), retry=True)


def get_job(job_id: Id) -> Call[models.JobOut]:
    return Call("GET", f"{PUBLIC}/jobs/{job_id}", _model(models.JobOut), retry=True)


# -- internal API (service key): what an orchestrator calls ---------------------------------


def agent_conversation(cid: Id) -> Call[models.ConversationOut]:
    path = f"{INTERNAL}/conversations/{cid}"
    return Call("GET", path, _model(models.ConversationOut), internal=True, retry=True)


def list_all_conversations(
    cursor: str | None, **filters: Any
) -> Call[Page[models.ConversationOut]]:
    params = _params(cursor=cursor, **filters)
    path = f"{INTERNAL}/conversations"
    return Call("GET", path, _page(models.ConversationOut), params, internal=True, retry=True)


def context_window(cid: Id, **options: Any) -> Call[models.ConversationMemory]:
    path = f"{INTERNAL}/conversations/{cid}/context"
    params = _params(**options, format="native")
    return Call("GET", path, _model(models.ConversationMemory), params, internal=True, retry=True)


def openai_context_window(
    cid: Id, for_agent: str | None = None, **options: Any
) -> Call[models.OpenAIContext]:
    path = f"{INTERNAL}/conversations/{cid}/context"
    params = _params(**options, format="openai", for_agent=for_agent)
    return Call("GET", path, _model(models.OpenAIContext), params, internal=True, retry=True)


def tracked_context(cid: Id) -> Call[models.TrackedContextOut]:
    path = f"{INTERNAL}/conversations/{cid}/tracked-context"
    return Call("GET", path, _model(models.TrackedContextOut), internal=True, retry=True)


def patch_tracked_context(
    cid: Id, patch: Mapping[str, Any], if_match: str | None, changed_by: str | None
) -> Call[models.TrackedContextOut]:
    headers = _params(**{"If-Match": if_match, "X-Changed-By": changed_by})
    # A JSON merge patch applied twice gives the same document: safe to repeat.
    return Call(
        "PATCH",
        f"{INTERNAL}/conversations/{cid}/tracked-context",
        _model(models.TrackedContextOut),
        json=dict(patch),
        headers=headers,
        internal=True,
        retry=if_match is None,
    )


def tracked_context_history(
    cid: Id, before_version: int | None, limit: int | None
) -> Call[Page[models.TrackedContextVersionOut]]:
    path = f"{INTERNAL}/conversations/{cid}/tracked-context/history"
    params = _params(before_version=before_version, limit=limit)
    parse = _page(models.TrackedContextVersionOut)
    return Call("GET", path, parse, params, internal=True, retry=True)


def create_agent_message(cid: Id, body: Any = None, **fields: Any) -> Call[models.MessageOut]:
    # Not retried: without an Idempotency-Key a repeat would create a second message.
    return Call(
        "POST",
        f"{INTERNAL}/conversations/{cid}/messages",
        _model(models.MessageOut),
        json=_body(models.AgentMessageCreate, body, **fields),
        internal=True,
    )


def append_deltas(
    cid: Id, mid: Id, chunks: Sequence[tuple[int, str]]
) -> Call[models.DeltasAccepted]:
    # Deltas are indexed: a re-sent index is ignored, so a retry is safe.
    body = {"deltas": [{"index": index, "text": text} for index, text in chunks]}
    return Call(
        "POST",
        f"{INTERNAL}/conversations/{cid}/messages/{mid}/deltas",
        _model(models.DeltasAccepted),
        json=_body(models.DeltasIn, body),
        internal=True,
        retry=True,
    )


def complete_message(
    cid: Id, mid: Id, content: str | None, metadata: Mapping[str, Any] | None
) -> Call[models.StreamResult]:
    fields = _params(content=content, metadata=dict(metadata) if metadata else None)
    return Call(
        "POST",
        f"{INTERNAL}/conversations/{cid}/messages/{mid}/complete",
        _model(models.StreamResult),
        json=_body(models.StreamComplete, fields),
        internal=True,
        retry=True,
    )


def fail_message(cid: Id, mid: Id, error: str) -> Call[models.StreamResult]:
    return Call(
        "POST",
        f"{INTERNAL}/conversations/{cid}/messages/{mid}/fail",
        _model(models.StreamResult),
        json=_body(models.StreamFail, {"error": error}),
        internal=True,
        retry=True,
    )


def request_task(cid: Id, body: Any = None, **fields: Any) -> Call[models.JobOut]:
    return Call(
        "POST",
        f"{INTERNAL}/conversations/{cid}/tasks",
        _model(models.JobOut),
        json=_body(models.TaskRequest, body, **fields),
        internal=True,
    )


def agent_job(job_id: Id) -> Call[models.JobOut]:
    path = f"{INTERNAL}/jobs/{job_id}"
    return Call("GET", path, _model(models.JobOut), internal=True, retry=True)


def update_message(cid: Id, mid: Id, body: Any = None, **fields: Any) -> Call[models.MessageOut]:
    json = _body(models.MessageUpdate, body, **fields)
    path = f"{PUBLIC}/conversations/{cid}/messages/{mid}"
    return Call("PATCH", path, _model(models.MessageOut), json=json, retry=True)


def create_workflow_conversation(
    idempotency_key: str, body: Any = None, **fields: Any
) -> Call[models.WorkflowConversationOut]:
    return Call(
        "POST",
        f"{INTERNAL}/conversations",
        _model(models.WorkflowConversationOut),
        json=_body(models.WorkflowConversationCreate, body, **fields),
        headers={"Idempotency-Key": idempotency_key},
        internal=True,
        retry=True,
    )


def hand_off(
    cid: Id, idempotency_key: str, body: Any = None, **fields: Any
) -> Call[models.HandoffOut]:
    return Call(
        "POST",
        f"{INTERNAL}/conversations/{cid}/handoff",
        _model(models.HandoffOut),
        json=_body(models.HandoffIn, body, **fields),
        headers={"Idempotency-Key": idempotency_key},
        internal=True,
        retry=True,
    )


def session_context(session_id: Id) -> Call[models.SessionContext]:
    path = f"{INTERNAL}/sessions/{session_id}/context"
    return Call("GET", path, _model(models.SessionContext), internal=True, retry=True)


def patch_session_context(
    session_id: Id, body: Any = None, **fields: Any
) -> Call[models.SessionContext]:
    return Call(
        "PATCH",
        f"{INTERNAL}/sessions/{session_id}/context",
        _model(models.SessionContext),
        json=_body(models.SessionContextPatch, body, **fields),
        internal=True,
    )


def callback_delivery(delivery_id: Id) -> Call[models.CallbackDeliveryOut]:
    path = f"{INTERNAL}/callbacks/{delivery_id}"
    return Call("GET", path, _model(models.CallbackDeliveryOut), internal=True, retry=True)


def redeliver_callback(delivery_id: Id) -> Call[models.RedeliveryOut]:
    path = f"{INTERNAL}/callbacks/{delivery_id}/redeliver"
    return Call("POST", path, _model(models.RedeliveryOut), internal=True)
