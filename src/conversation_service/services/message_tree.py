"""Messages as a tree: runs, paths, siblings and the newest message under a message.

Every message has a ``parent_id``. The tree is stored as *runs* (``branch_id``): chains in which
each message is the first child of the one before it. The first root's run is the conversation
id; any other message that does not continue its parent's run starts its own, and its first
message records the runs above it in ``branch_ancestry``: ``[[run, until_seq], …]`` from the
root down to its parent. The path from a root to a message ``m`` is therefore

    run_1 ∩ (0, s_1] · run_2 ∩ (s_1, s_2] · … · run(m) ∩ (s_k, m.seq]

disjoint ``seq`` intervals, one range scan each on ``(conversation_id, branch_id, seq)``, read
in one lookup of ``m`` and its run's first message. Nothing walks parents one by one; the cost of a
page depends on the page and the runs it crosses, not on the history's length.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, RowMapping, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import ConversationNotFoundError
from conversation_service.services.auth import Principal
from conversation_service.services.message_insert import RUN_OF, unknown_reference
from conversation_service.services.message_store import MESSAGE_COLUMNS


@dataclass(frozen=True, slots=True)
class Segment:
    """The messages of run ``branch_id`` with ``low < seq <= high``."""

    branch_id: uuid.UUID
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class Path:
    """The path from a root to ``leaf_id`` (empty when the conversation has no message)."""

    leaf_id: uuid.UUID | None
    segments: tuple[Segment, ...]

    def holds(self, branch_id: uuid.UUID | None, seq: int) -> bool:
        """Whether the message at ``(branch_id, seq)`` is on the path."""
        return any(s.branch_id == branch_id and s.low < seq <= s.high for s in self.segments)


EMPTY = Path(None, ())


def path_to(
    conversation_id: uuid.UUID,
    leaf_id: uuid.UUID,
    branch_id: uuid.UUID | None,
    seq: int,
    ancestry: Sequence[Sequence[Any]] | None,
) -> Path:
    """The path ending at a message, from its run and its run's ancestry."""
    stops = [(uuid.UUID(str(run)), int(until)) for run, until in ancestry or ()]
    stops.append((branch_id or conversation_id, seq))
    segments, low = [], 0
    for run, until in stops:
        segments.append(Segment(run, low, until))
        low = until
    return Path(leaf_id, tuple(segments))


_head = messages.alias("head")
_target = messages.alias("target")
# The owner check, the leaf (named, else the active one) and its run's ancestry in one read.
_RESOLVE = (
    select(
        conversations.c.active_leaf_id,
        _target.c.id,
        _target.c.seq,
        _target.c.branch_id,
        _target.c.deleted_at,
        _head.c.branch_ancestry,
    )
    .select_from(
        conversations.outerjoin(
            _target,
            (_target.c.conversation_id == conversations.c.id)
            & (_target.c.id == bindparam("p_leaf")),
        ).outerjoin(_head, _head.c.id == _target.c.branch_id)
    )
    .where(
        conversations.c.id == bindparam("p_conversation_id"),
        conversations.c.tenant_id == bindparam("p_tenant_id"),
        conversations.c.user_id == bindparam("p_user_id"),
        conversations.c.deleted_at.is_(None),
    )
)


async def resolve_path(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    leaf: uuid.UUID | None = None,
    *,
    name: str = "leaf",
    live: bool = True,
) -> Path:
    """The path to ``leaf`` (default: the active leaf) of one of the principal's conversations.

    A named leaf that is not a message of the conversation (or, with ``live``, is deleted) is a
    422 under ``name``; the conversation itself is a 404 when the caller does not own it.
    """
    params = {
        "p_conversation_id": conversation_id,
        "p_tenant_id": principal.tenant_id,
        "p_user_id": principal.user_id,
        "p_leaf": leaf,
    }
    row = (await conn.execute(_RESOLVE, params)).one_or_none()
    if row is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    if leaf is None:
        if row.active_leaf_id is None:
            return EMPTY
        params["p_leaf"] = row.active_leaf_id
        row = (await conn.execute(_RESOLVE, params)).one()
    elif row.id is None or (live and row.deleted_at is not None):
        raise unknown_reference(name, leaf)
    return path_to(conversation_id, row.id, row.branch_id, row.seq, row.branch_ancestry)


def _segment_statement(ascending: bool, columns: Sequence[Any]) -> Any:
    return (
        select(*columns)
        .where(
            messages.c.conversation_id == bindparam("p_conversation_id"),
            messages.c.branch_id == bindparam("p_branch"),
            messages.c.seq > bindparam("p_low", type_=BigInteger()),
            messages.c.seq < bindparam("p_below", type_=BigInteger()),
            messages.c.deleted_at.is_(None),
        )
        .order_by(messages.c.seq.asc() if ascending else messages.c.seq.desc())
        .limit(bindparam("p_limit", type_=Integer()))
    )


_SEGMENT_ASC = _segment_statement(True, MESSAGE_COLUMNS)
_SEGMENT_DESC = _segment_statement(False, MESSAGE_COLUMNS)


async def path_rows(
    conn: AsyncConnection,
    conversation_id: uuid.UUID,
    path: Path,
    *,
    after: int,
    before: int,
    ascending: bool,
    limit: int,
    statements: tuple[Any, Any] = (_SEGMENT_ASC, _SEGMENT_DESC),
) -> list[RowMapping]:
    """Up to ``limit`` live messages of the path with ``after < seq < before``, in order.

    One range scan per run crossed, each bounded by the rows still wanted: a page inside one
    run (the usual case) is one statement.
    """
    segments = path.segments if ascending else tuple(reversed(path.segments))
    statement = statements[0] if ascending else statements[1]
    rows: list[RowMapping] = []
    for segment in segments:
        low, below = max(segment.low, after), min(segment.high + 1, before)
        if low + 1 >= below:
            continue
        params = {
            "p_conversation_id": conversation_id,
            "p_branch": segment.branch_id,
            "p_low": low,
            "p_below": below,
            "p_limit": limit - len(rows),
        }
        rows.extend((await conn.execute(statement, params)).mappings())
        if len(rows) >= limit:
            break
    return rows


def segment_statements(columns: Sequence[Any]) -> tuple[Any, Any]:
    """Prebuilt ascending and descending segment reads of other columns (the context window)."""
    return _segment_statement(True, columns), _segment_statement(False, columns)


# No ORDER BY: sorted by seq here, SQLite would walk the (conversation_id, seq) index through
# the whole conversation instead of probing (conversation_id, parent_id) per parent.
_CHILDREN = select(messages.c.id, messages.c.parent_id, messages.c.seq).where(
    messages.c.conversation_id == bindparam("p_conversation_id"),
    messages.c.parent_id.in_(bindparam("p_parents", expanding=True)),
    messages.c.deleted_at.is_(None),
)
_ROOTS = select(messages.c.id, messages.c.parent_id, messages.c.seq).where(
    messages.c.conversation_id == bindparam("p_conversation_id"),
    messages.c.parent_id.is_(None),
    messages.c.deleted_at.is_(None),
)


async def children_of(
    conn: AsyncConnection, conversation_id: uuid.UUID, parents: set[uuid.UUID | None]
) -> dict[uuid.UUID | None, list[uuid.UUID]]:
    """The live children of each parent (None: the roots), in creation order."""
    found: dict[uuid.UUID | None, list[uuid.UUID]] = {parent: [] for parent in parents}
    named = [parent for parent in parents if parent is not None]
    rows: list[Any] = []
    if named:
        params = {"p_conversation_id": conversation_id, "p_parents": named}
        rows.extend(await conn.execute(_CHILDREN, params))
    if None in parents:
        rows.extend(await conn.execute(_ROOTS, {"p_conversation_id": conversation_id}))
    for row in sorted(rows, key=lambda row: row.seq):
        found[row.parent_id].append(row.id)
    return found


async def with_siblings(
    conn: AsyncConnection, conversation_id: uuid.UUID, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Messages (JSON-ready) with ``siblings: {index, count}``: their place among the live
    children of their parent, 1-based, in creation order."""
    if not items:
        return items
    children = await children_of(conn, conversation_id, {item["parent_id"] for item in items})
    for item in items:
        group = children[item["parent_id"]]
        index = group.index(item["id"]) + 1 if item["id"] in group else 0
        item["siblings"] = {"index": index, "count": len(group)}
    return items


_HEADS = select(messages.c.id, messages.c.branch_ancestry).where(
    messages.c.conversation_id == bindparam("p_conversation_id"),
    messages.c.branch_ancestry.is_not(None),
)
_NEWEST_OF_RUN = (
    select(messages.c.id, messages.c.seq)
    .where(
        messages.c.conversation_id == bindparam("p_conversation_id"),
        messages.c.branch_id == bindparam("p_branch"),
    )
    .order_by(messages.c.seq.desc())
    .limit(1)
)


async def newest_under(
    conn: AsyncConnection, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID]:
    """The newest message (highest seq, tombstones included: it is the tree's leaf) in the
    subtree of ``message_id``, with its run: its own run from it on, and every run that forks
    off at or below it. One read per run of the subtree, never per message."""
    target = (await conn.execute(RUN_OF, {"p_message": message_id})).one()
    run = target.branch_id or conversation_id
    runs = [run]
    for head in await conn.execute(_HEADS, {"p_conversation_id": conversation_id}):
        above = head.branch_ancestry
        if any(uuid.UUID(str(r)) == run and int(until) >= target.seq for r, until in above):
            runs.append(head.id)
    best: tuple[int, uuid.UUID, uuid.UUID] = (target.seq, message_id, run)
    for branch in runs:
        newest = (
            await conn.execute(
                _NEWEST_OF_RUN, {"p_conversation_id": conversation_id, "p_branch": branch}
            )
        ).one_or_none()
        if newest is not None and newest.seq > best[0]:
            best = (newest.seq, newest.id, branch)
    return best[1], best[2]


async def path_of(
    conn: AsyncConnection, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> Path | None:
    """The path ending at a message of the conversation (None when it is not one), for
    trusted callers (workers) that have no principal."""
    row = (await conn.execute(RUN_OF, {"p_message": message_id})).one_or_none()
    if row is None or row.conversation_id != conversation_id:
        return None
    return path_to(conversation_id, message_id, row.branch_id, row.seq, row.branch_ancestry)


_AT = select(messages.c.id).where(
    messages.c.conversation_id == bindparam("p_conversation_id"),
    messages.c.branch_id == bindparam("p_branch"),
    messages.c.seq == bindparam("p_seq", type_=BigInteger()),
)
_TOKENS_IN = select(func.coalesce(func.sum(messages.c.tokens_o200k), 0)).where(
    messages.c.conversation_id == bindparam("p_conversation_id"),
    messages.c.branch_id == bindparam("p_branch"),
    messages.c.seq > bindparam("p_low", type_=BigInteger()),
    messages.c.seq <= bindparam("p_high", type_=BigInteger()),
    messages.c.deleted_at.is_(None),
)


async def message_at(
    conn: AsyncConnection, conversation_id: uuid.UUID, path: Path, seq: int
) -> uuid.UUID | None:
    """The id of the path's message with this seq (None when the path has none)."""
    for segment in path.segments:
        if segment.low < seq <= segment.high:
            params = {"p_conversation_id": conversation_id, "p_branch": segment.branch_id}
            found: uuid.UUID | None = await conn.scalar(_AT, {**params, "p_seq": seq})
            return found
    return None


async def path_tokens(
    conn: AsyncConnection, conversation_id: uuid.UUID, path: Path, low: int, high: int
) -> int:
    """o200k tokens of the path's live messages with ``low < seq <= high``."""
    total = 0
    for segment in path.segments:
        start, end = max(segment.low, low), min(segment.high, high)
        if start < end:
            params = {
                "p_conversation_id": conversation_id,
                "p_branch": segment.branch_id,
                "p_low": start,
                "p_high": end,
            }
            total += int(await conn.scalar(_TOKENS_IN, params) or 0)
    return total


async def holds_message(conn: AsyncConnection, path: Path, message_id: uuid.UUID | None) -> bool:
    """Whether a message is on the path."""
    if message_id is None:
        return False
    row = (await conn.execute(RUN_OF, {"p_message": message_id})).one_or_none()
    return row is not None and path.holds(row.branch_id, row.seq)


async def path_span(
    conn: AsyncConnection,
    conversation_id: uuid.UUID,
    path: Path,
    low: int,
    high: int,
    statements: tuple[Any, Any],
    *,
    batch: int = 500,
) -> list[RowMapping]:
    """Every live message of the path with ``low < seq <= high``, oldest first."""
    rows: list[RowMapping] = []
    while True:
        more = await path_rows(
            conn,
            conversation_id,
            path,
            after=rows[-1]["seq"] if rows else low,
            before=high + 1,
            ascending=True,
            limit=batch,
            statements=statements,
        )
        rows.extend(more)
        if len(more) < batch:
            return rows
