"""The append's SQL: the next seq, the parent, the run and the active leaf, under the
conversation's row lock.

The conversation row is the lock: its UPDATE (a row lock on PostgreSQL, the write lock on SQLite)
serialises every append of one conversation, so ``seq`` stays gap-free and the parent a message
follows by default (the active leaf) is read after the previous append moved it.

A message continues its parent's run (``branch_id``) when the parent is the active leaf, which is
always a leaf (appends and ``PUT …/active-leaf`` only ever point it at a message without
children); otherwise it starts a run of its own (``branch_id`` = its id), and
``services.message_tree`` records the runs above it. So every run is a chain and a path is a few
range scans (see ``message_tree``).

On PostgreSQL an append is one statement (a data-modifying CTE), on SQLite two (bump, insert),
as before trees: the conversation's UPDATE moves the leaf and decides the run itself. A refused
reference leaves the statement without a row and the caller's error rolls the bump back.
"""

import uuid
from typing import Any, NamedTuple, NoReturn

from sqlalchemy import (
    Boolean,
    Integer,
    Uuid,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal_column,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import (
    ConversationNotFoundError,
    ConversationNotWritableError,
    UnknownMessageReferenceError,
)
from conversation_service.models.conversation import ConversationStatus
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import owned_by
from conversation_service.services.search_text import SEARCH_COLUMNS

INSERT_COLUMNS = (
    "id",
    "conversation_id",
    "tenant_id",
    "role",
    "agent_id",
    "content",
    "content_parts",
    "status",
    "metadata",
    "idempotency_key",
    "created_at",
    "updated_at",
    "tokens_cl100k",
    "tokens_o200k",
    "token_count",
    "always_include",
    *SEARCH_COLUMNS,
)


class Placed(NamedTuple):
    """Where an insert put the message: its seq, author, parent and run."""

    seq: int
    agent_id: str | None
    parent_id: uuid.UUID | None
    branch_id: uuid.UUID


def _locked_owner_clause() -> Any:
    return (
        conversations.c.id == bindparam("b_conversation_id"),
        conversations.c.tenant_id == bindparam("b_tenant_id"),
        conversations.c.user_id == bindparam("b_user_id"),
        conversations.c.deleted_at.is_(None),
        # Constants inline (not anonymous binds): INSERT … FROM SELECT executed with a
        # parameter dict requires every bind to be named in it.
        conversations.c.status == literal_column(f"'{ConversationStatus.ACTIVE.value}'"),
    )


_BUMP_VALUES = {
    "last_seq": conversations.c.last_seq + literal_column("1"),
    "message_count": conversations.c.message_count + literal_column("1"),
    "token_count": conversations.c.token_count + bindparam("b_tokens", type_=Integer()),
    "updated_at": bindparam("b_now", type_=messages.c.created_at.type),
    "last_message_at": bindparam("b_now", type_=messages.c.created_at.type),
}
_parent_set = bindparam("m_parent_set", type_=Boolean())
_parent_id = bindparam("m_parent_id", type_=Uuid())
_message_id = bindparam("m_id", type_=Uuid())
_conversation_id = bindparam("b_conversation_id", type_=Uuid())
_referenced = messages.alias("referenced")
_run_head = messages.alias("run_head")


def _parent_is_live() -> Any:
    return exists().where(
        _referenced.c.id == _parent_id,
        _referenced.c.conversation_id == _conversation_id,
        _referenced.c.deleted_at.is_(None),
    )


def _bump() -> Any:
    """The conversation's UPDATE under its row lock: next seq, counters, and the new leaf.

    Its right-hand sides read the row as it was when locked (on PostgreSQL the newest committed
    version, once the lock is granted), so the run is decided here: the message continues the
    leaf's run when it follows the leaf. ``replaced_leaf_id`` keeps the leaf it replaced, which
    RETURNING (new values only) hands back as the default parent.
    """
    inherits = or_(
        not_(_parent_set), _parent_id.is_not_distinct_from(conversations.c.active_leaf_id)
    )
    return (
        update(conversations)
        .where(*_locked_owner_clause())
        .values(
            **_BUMP_VALUES,
            replaced_leaf_id=conversations.c.active_leaf_id,
            active_leaf_id=_message_id,
            active_branch_id=case(
                (inherits, func.coalesce(conversations.c.active_branch_id, conversations.c.id)),
                else_=_message_id,
            ),
        )
        .returning(
            conversations.c.last_seq,
            conversations.c.agent_id,
            conversations.c.active_branch_id,
            conversations.c.replaced_leaf_id,
        )
    )


def _pg_append() -> Any:
    """The whole append in one statement: the bump (lock, seq, leaf, run), then the insert."""
    bumped = _bump().cte("bumped")
    agent = case(
        (bindparam("m_inherit_agent", type_=Boolean()), bumped.c.agent_id),
        else_=bindparam("m_agent_id", type_=messages.c.agent_id.type),
    )
    source = select(
        *(
            agent if name == "agent_id" else bindparam(f"m_{name}", type_=messages.c[name].type)
            for name in INSERT_COLUMNS
        ),
        case((_parent_set, _parent_id), else_=bumped.c.replaced_leaf_id),
        bumped.c.active_branch_id,
        bumped.c.last_seq,
    ).where(or_(not_(_parent_set), _parent_id.is_(None), _parent_is_live()))
    return (
        insert(messages)
        .from_select([*INSERT_COLUMNS, "parent_id", "branch_id", "seq"], source)
        .returning(messages.c.seq, messages.c.agent_id, messages.c.parent_id, messages.c.branch_id)
    )


def _sqlite_bump() -> Any:
    bump = _bump()
    return bump.returning(_parent_is_live().label("parent_live"))


# Built once: every append reuses the compiled form from SQLAlchemy's statement cache.
_PG_APPEND = _pg_append()
_SQLITE_BUMP = _sqlite_bump()
_INSERT = insert(messages)


async def insert_with_next_seq(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    values: dict[str, Any],
    now: Any,
    *,
    parent: tuple[bool, uuid.UUID | None],
    inherit_agent: bool,
) -> Placed:
    """Insert ``values`` (``INSERT_COLUMNS``) with the next seq and make it the active leaf.

    ``parent`` is ``(given, parent_id)``: not given means the active leaf; a given parent must be
    a live message of the conversation (None: a new root).
    """
    given, parent_id = parent
    params = {
        "b_conversation_id": conversation_id,
        "b_tenant_id": principal.tenant_id,
        "b_user_id": principal.user_id,
        "b_tokens": values["token_count"],
        "b_now": now,
        "m_parent_set": given,
        "m_parent_id": parent_id,
        "m_id": values["id"],
    }
    if conn.dialect.name == "postgresql":
        row_params = {f"m_{name}": values[name] for name in INSERT_COLUMNS}
        row_params["m_inherit_agent"] = inherit_agent
        row = (await conn.execute(_PG_APPEND, {**params, **row_params})).one_or_none()
        if row is None:
            await _explain_refused_append(conn, principal, conversation_id, parent_id)
        return Placed(int(row.seq), row.agent_id, row.parent_id, row.branch_id)
    bumped = (await conn.execute(_SQLITE_BUMP, params)).one_or_none()
    if bumped is None:
        await _explain_refused_append(conn, principal, conversation_id, parent_id)
    if given and parent_id is not None and not bumped.parent_live:
        raise unknown_reference("parent_id", parent_id)
    if not given:
        parent_id = bumped.replaced_leaf_id
    agent_id = bumped.agent_id if inherit_agent else values["agent_id"]
    placed = Placed(int(bumped.last_seq), agent_id, parent_id, bumped.active_branch_id)
    await conn.execute(_INSERT, {**values, **placed._asdict()})
    return placed


def unknown_reference(name: str, message_id: uuid.UUID) -> UnknownMessageReferenceError:
    """The 422 of a message reference that is not a live message of the conversation."""
    return UnknownMessageReferenceError(
        f"{name} {message_id} is not a message of this conversation",
        extra={"errors": [{"loc": [name], "msg": "unknown message", "type": "unknown_message"}]},
    )


async def _explain_refused_append(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    parent_id: uuid.UUID | None,
) -> NoReturn:
    status = (
        await conn.execute(
            select(conversations.c.status).where(owned_by(principal, conversation_id))
        )
    ).scalar_one_or_none()
    if status is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    if status != ConversationStatus.ACTIVE.value or parent_id is None:
        raise ConversationNotWritableError(
            f"conversation is {status}; set its status to active to add messages"
        )
    raise unknown_reference("parent_id", parent_id)


RUN_OF = (
    select(
        messages.c.conversation_id,
        messages.c.branch_id,
        messages.c.seq,
        _run_head.c.branch_ancestry,
    )
    .select_from(messages.outerjoin(_run_head, _run_head.c.id == messages.c.branch_id))
    .where(messages.c.id == bindparam("p_message"))
)
_MARK_RUN = (
    update(messages)
    .where(messages.c.id == bindparam("p_message"))
    .values(branch_ancestry=bindparam("p_ancestry", type_=messages.c.branch_ancestry.type))
)


async def record_run(
    conn: AsyncConnection, message_id: uuid.UUID, parent_id: uuid.UUID | None
) -> None:
    """Mark ``message_id`` as the first message of a run, with the runs above it."""
    ancestry: list[list[Any]] = []
    if parent_id is not None:
        parent = (await conn.execute(RUN_OF, {"p_message": parent_id})).one()
        ancestry = [*(parent.branch_ancestry or ()), [str(parent.branch_id), parent.seq]]
    await conn.execute(_MARK_RUN, {"p_message": message_id, "p_ancestry": ancestry})
