"""Tables of background work: the jobs outbox and callback deliveries with their attempts."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from conversation_service.db.tables import Base
from conversation_service.db.types import JSONType


class Job(Base):
    """A unit of background work; also the transactional outbox.

    A row is written in the same transaction as the change that needs it (status ``pending``),
    dispatched to RQ after the commit (``queued``), claimed by a worker under a lease
    (``started``), and ends ``finished``, ``failed``, ``cancelled`` or ``skipped`` (its
    conversation or message was deleted first). The database, not Redis,
    is the record: a sweep re-dispatches rows that Redis lost or whose worker died.
    """

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    # No foreign key: a lifecycle callback must outlive the conversation it reports.
    conversation_id: Mapped[uuid.UUID | None]
    message_id: Mapped[uuid.UUID | None]
    kind: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(16))
    args: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer)
    rq_job_id: Mapped[str | None] = mapped_column(String(128))
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    dispatched_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_conversation", "conversation_id", "id"),
    )


class CallbackDelivery(Base):
    """One signed event for one URL; its id is the ``webhook-id`` on every attempt."""

    __tablename__ = "callback_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    conversation_id: Mapped[uuid.UUID | None]
    event_type: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_callback_deliveries_conversation", "conversation_id", "id"),)


class CallbackAttempt(Base):
    """Proof of one delivery attempt: status code, latency, error."""

    __tablename__ = "callback_attempts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("callback_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_callback_attempts_delivery", "delivery_id", "attempt"),)


jobs_table = Base.metadata.tables["jobs"]
callback_deliveries_table = Base.metadata.tables["callback_deliveries"]
callback_attempts_table = Base.metadata.tables["callback_attempts"]
