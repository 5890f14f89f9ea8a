"""The callbacks we send, documented in the OpenAPI ``webhooks`` section.

These operations are never served: they describe the POSTs the orchestrator receives, so its
team reads one spec for both directions. Every request carries the Standard Webhooks headers
``webhook-id`` (the same on every retry), ``webhook-timestamp`` and ``webhook-signature``.
"""

from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field

from conversation_service.models.feedback import FeedbackOut
from conversation_service.models.handoff import AgentChangedData
from conversation_service.models.message import MessageOut


class MessageCreatedData(BaseModel):
    """A user wrote: run the agent."""

    conversation_id: str
    message: MessageOut


class RegenerateRequestedData(BaseModel):
    """A user asked for another reply to one of their messages."""

    conversation_id: str
    message_id: str = Field(description="The user message to answer.")
    message: MessageOut


class RegenerateRequestedEvent(BaseModel):
    """``message.regenerate_requested``."""

    type: Literal["message.regenerate_requested"]
    timestamp: datetime
    data: RegenerateRequestedData


class TaskOutcomeData(BaseModel):
    """How a requested task ended."""

    job_id: str
    kind: str
    conversation_id: str | None
    status: Literal["finished", "failed"]
    result: dict[str, Any] | None = None
    error: str | None = None


class MessageCreatedEvent(BaseModel):
    """``message.created``."""

    type: Literal["message.created"]
    timestamp: datetime
    data: MessageCreatedData


class TaskCompletedEvent(BaseModel):
    """``task.completed``."""

    type: Literal["task.completed"]
    timestamp: datetime
    data: TaskOutcomeData


class TaskFailedEvent(BaseModel):
    """``task.failed``."""

    type: Literal["task.failed"]
    timestamp: datetime
    data: TaskOutcomeData


class ConversationLifecycleEvent(BaseModel):
    """``conversation.created`` / ``conversation.archived`` / ``conversation.deleted``."""

    type: Literal["conversation.created", "conversation.archived", "conversation.deleted"]
    timestamp: datetime
    data: dict[str, Any] = Field(description="The conversation (id, agent_id, user_id, status…).")


class AgentChangedEvent(BaseModel):
    """``conversation.agent_changed``."""

    type: Literal["conversation.agent_changed"]
    timestamp: datetime
    data: AgentChangedData


class WorkflowStepData(BaseModel):
    """A tracked context's ``workflow_step`` changed."""

    conversation_id: str
    workflow_id: str | None
    old_step: str | None
    new_step: str | None
    version: int = Field(description="The tracked context's version after the change.")
    changed_by: str


class WorkflowStepChangedEvent(BaseModel):
    """``workflow.step_changed``."""

    type: Literal["workflow.step_changed"]
    timestamp: datetime
    data: WorkflowStepData


class MessageFeedbackData(BaseModel):
    """A user gave, replaced or withdrew (``feedback: null``) their feedback on a reply."""

    tenant_id: str
    conversation_id: str
    message_id: str
    agent_id: str | None = Field(description="The agent that wrote the reply.")
    user_id: str
    feedback: FeedbackOut | None


class MessageFeedbackEvent(BaseModel):
    """``message.feedback``."""

    type: Literal["message.feedback"]
    timestamp: datetime
    data: MessageFeedbackData


def document_webhooks(app: FastAPI) -> None:
    """Add every callback payload to ``app.webhooks`` (OpenAPI ``webhooks``)."""

    @app.webhooks.post("message.created")
    def message_created(body: MessageCreatedEvent) -> None:
        """A user message was stored; sent at high priority to ORCHESTRATOR_CALLBACK_URL."""

    @app.webhooks.post("message.regenerate_requested")
    def message_regenerate_requested(body: RegenerateRequestedEvent) -> None:
        """A new reply to ``message_id`` is wanted, at high priority: stream it through the
        internal API with ``parent_id`` = ``message_id`` (it becomes a sibling of the old)."""

    @app.webhooks.post("task.completed")
    def task_completed(body: TaskCompletedEvent) -> None:
        """A requested task finished; sent to its callback_url and the orchestrator."""

    @app.webhooks.post("task.failed")
    def task_failed(body: TaskFailedEvent) -> None:
        """A requested task failed after its last attempt."""

    @app.webhooks.post("conversation.lifecycle")
    def conversation_lifecycle(body: ConversationLifecycleEvent) -> None:
        """A conversation was created, archived or deleted."""

    @app.webhooks.post("conversation.agent_changed")
    def conversation_agent_changed(body: AgentChangedEvent) -> None:
        """Another agent took the conversation over (a handoff)."""

    @app.webhooks.post("message.feedback")
    def message_feedback(body: MessageFeedbackEvent) -> None:
        """A user rated a reply (thumbs up or down), replaced or withdrew their rating."""

    @app.webhooks.post("workflow.step_changed")
    def workflow_step_changed(body: WorkflowStepChangedEvent) -> None:
        """The conversation's tracked ``workflow_step`` changed (old and new step)."""
