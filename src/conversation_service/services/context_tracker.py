"""Tracked context: conversation-level facts, changed by merge patches with optimistic concurrency.

Every change writes a new version (who, when, the patch, the resulting document), so the history
can be read back. ``If-Match`` with a stale version is refused (412) and changes nothing; the
UPDATE itself re-checks the version, so two writers racing on the same version cannot both win.

A change of ``workflow_step`` is a workflow event: ``context.updated`` then carries
``workflow_step: {"old", "new"}``, and the orchestrator gets a signed ``workflow.step_changed``
callback (when a callback URL is configured).
"""

import uuid
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import tracked_context_versions_table as versions
from conversation_service.db.tables import tracked_contexts_table as tracked
from conversation_service.errors import (
    InvalidCursorError,
    PreconditionFailedError,
    ValidationError,
)
from conversation_service.events.log import EventType
from conversation_service.models.common import Page
from conversation_service.models.context import (
    TrackedContextData,
    TrackedContextOut,
    TrackedContextVersionOut,
)
from conversation_service.services import callbacks
from conversation_service.services.conversation_manager import (
    get_conversation_for_service,
    tenant_of,
)
from conversation_service.services.unit_of_work import UnitOfWork
from conversation_service.utils.clock import utcnow
from conversation_service.utils.json_merge import merge_patch


async def get_tracked_context(
    conn: AsyncConnection, conversation_id: uuid.UUID
) -> TrackedContextOut:
    """The current tracked context (version 0 and empty before the first change)."""
    row = (
        (await conn.execute(select(tracked).where(tracked.c.conversation_id == conversation_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        return TrackedContextOut(
            conversation_id=str(conversation_id),
            version=0,
            data={},
            updated_at=None,
            updated_by=None,
        )
    return TrackedContextOut(
        conversation_id=str(conversation_id),
        version=row["version"],
        data=row["data"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


async def patch_tracked_context(
    uow: UnitOfWork,
    conversation_id: uuid.UUID,
    patch: dict[str, Any],
    *,
    if_match: int | None,
    changed_by: str,
    settings: ConversationSettings | None = None,
) -> TrackedContextOut:
    """Apply a JSON merge patch (``if_match`` must name the current version when given) and
    publish ``context.updated`` (a ``workflow_step`` change also sends ``workflow.step_changed``
    to the orchestrator when ``settings`` configure a callback URL)."""
    conn = uow.conn
    conversation = await get_conversation_for_service(conn, conversation_id)  # 404 unless live
    tenant_id = await tenant_of(conn, conversation_id)
    current = await get_tracked_context(conn, conversation_id)
    if if_match is not None and if_match != current.version:
        raise PreconditionFailedError(
            f"If-Match names version {if_match}, the current version is {current.version}"
        )
    document = merge_patch(current.data, patch)
    try:
        TrackedContextData.model_validate(document)
    except PydanticValidationError as exc:
        fields = [
            {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise ValidationError("the patched context is not valid", extra={"errors": fields}) from exc
    now = utcnow()
    version = current.version + 1
    if current.version == 0:
        await conn.execute(
            insert(tracked).values(
                conversation_id=conversation_id,
                tenant_id=tenant_id,
                version=version,
                data=document,
                updated_at=now,
                updated_by=changed_by,
            )
        )
    else:
        changed = await conn.execute(
            update(tracked)
            .where(
                tracked.c.conversation_id == conversation_id, tracked.c.version == current.version
            )
            .values(version=version, data=document, updated_at=now, updated_by=changed_by)
        )
        if changed.rowcount != 1:
            raise PreconditionFailedError("the tracked context changed concurrently; re-read it")
    await conn.execute(
        insert(versions).values(
            conversation_id=conversation_id,
            version=version,
            tenant_id=tenant_id,
            patch=patch,
            data=document,
            changed_by=changed_by,
            changed_at=now,
        )
    )
    out = TrackedContextOut(
        conversation_id=str(conversation_id),
        version=version,
        data=document,
        updated_at=now,
        updated_by=changed_by,
    )
    event: dict[str, Any] = {"tracked_context": out.model_dump(mode="json")}
    old_step, new_step = current.data.get("workflow_step"), document.get("workflow_step")
    if old_step != new_step:
        step = {"old": old_step, "new": new_step}
        event["workflow_step"] = step
        if settings is not None and settings.orchestrator_callback_url:
            spec = await callbacks.record_callback(
                conn,
                settings,
                tenant_id=tenant_id,
                conversation_id=conversation_id,
                event_type="workflow.step_changed",
                data={
                    "conversation_id": str(conversation_id),
                    "workflow_id": conversation.workflow_id,
                    "old_step": old_step,
                    "new_step": new_step,
                    "version": version,
                    "changed_by": changed_by,
                },
                url=settings.orchestrator_callback_url,
                priority=conversation.priority.value,
            )
            await uow.record([spec])
    uow.publish(conversation_id, EventType.CONTEXT_UPDATED, event)
    return out


async def tracked_context_history(
    conn: AsyncConnection, conversation_id: uuid.UUID, *, limit: int, before_version: int | None
) -> Page[TrackedContextVersionOut]:
    """Versions newest first; page with ``before_version``."""
    if before_version is not None and before_version < 1:
        raise InvalidCursorError("before_version must be positive")
    where = [versions.c.conversation_id == conversation_id]
    if before_version is not None:
        where.append(versions.c.version < before_version)
    rows = (
        (
            await conn.execute(
                select(versions).where(*where).order_by(versions.c.version.desc()).limit(limit + 1)
            )
        )
        .mappings()
        .all()
    )
    items = [
        TrackedContextVersionOut(
            version=row["version"],
            changed_by=row["changed_by"],
            changed_at=row["changed_at"],
            patch=row["patch"],
            data=row["data"],
        )
        for row in rows[:limit]
    ]
    has_more = len(rows) > limit
    return Page(
        data=items, has_more=has_more, next_cursor=str(items[-1].version) if has_more else None
    )
