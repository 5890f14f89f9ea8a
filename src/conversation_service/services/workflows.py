"""Conversations the orchestrator starts for a workflow (a proactive follow-up, a form that
becomes a chat), owned by the user it names.

``create_for_workflow`` is the public create (``conversations.create_conversation``: the agent
validated, ``conversation.created`` recorded) for that user, then each opening message through
the one append (so a user opening message is session activity and sends ``message.created``
like any other), then ``workflow_step`` set in tracked context (which sends
``workflow.step_changed``). With an ``Idempotency-Key`` (scoped to the tenant) a retry returns
the first response and creates nothing.
"""

from dataclasses import dataclass
from typing import Any

from conversation_service.config.settings import ConversationSettings
from conversation_service.models.message import Role
from conversation_service.models.workflow import WorkflowConversationCreate
from conversation_service.services import context_tracker, conversations, idempotency
from conversation_service.services.agents import AgentDirectory
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import get_conversation
from conversation_service.services.handoffs import ORCHESTRATOR
from conversation_service.services.message_store import MessageDraft
from conversation_service.services.messages import append
from conversation_service.services.unit_of_work import UnitOfWork


@dataclass(frozen=True, slots=True)
class Created:
    """The ``WorkflowConversationOut`` body (JSON-ready); ``replayed`` for a repeated key."""

    body: dict[str, Any]
    replayed: bool


async def create_for_workflow(
    uow: UnitOfWork,
    data: WorkflowConversationCreate,
    *,
    settings: ConversationSettings,
    agents: AgentDirectory | None,
    idempotency_key: str | None = None,
) -> Created:
    """Create ``data.user``'s conversation with its opening messages and workflow step."""
    conn = uow.conn
    scope = None
    if idempotency_key is not None:
        scope = idempotency.IdempotencyScope.build(
            Principal(tenant_id=data.tenant, user_id=ORCHESTRATOR),
            idempotency_key,
            {"op": "create_conversation", **data.model_dump(mode="json")},
        )
        replay = await idempotency.find_replay(conn, scope)
        if replay is not None:
            return Created(replay, replayed=True)
    owner = Principal(tenant_id=data.tenant, user_id=data.user)
    created = await conversations.create_conversation(
        uow, owner, data, settings=settings, agents=agents
    )
    opening = []
    for message in data.messages:
        draft = MessageDraft(
            role=Role(message.role),
            content=message.content,
            metadata=message.metadata,
            agent_id=message.agent_id if message.role is Role.ASSISTANT else None,
        )
        appended = await append(uow, owner, created.id, draft, settings=settings)
        opening.append(appended.message)
    if data.workflow_step is not None:
        await context_tracker.patch_tracked_context(
            uow,
            created.id,
            {"workflow_step": data.workflow_step},
            if_match=None,
            changed_by="workflow",
            settings=settings,
        )
    conversation = await get_conversation(conn, owner, created.id)
    body = {**conversation.model_dump(mode="json"), "messages": opening}
    if scope is not None:
        await idempotency.record_response(
            conn, scope, conversation_id=created.id, status_code=201, response=body
        )
    return Created(body, replayed=False)
