"""Search over a user's history: ``GET /api/v1/search`` and ``GET /internal/v1/search``.

Both transports call ``search``. A hit is a message whose content matched, or the first message
the filters admit of a conversation whose title matched. Hits are ordered by score (higher is
better), then newest first. The engines' statements are in ``services.search_statements``; the
cursor, snippets and highlights are computed here from the stored text, the same for both.
"""

import hashlib
from dataclasses import asdict
from typing import Any, Final

import orjson

from conversation_service.errors import InvalidCursorError, ValidationError
from conversation_service.services.auth import Principal
from conversation_service.services.search_query import ParsedQuery, highlights, parse, snippet
from conversation_service.services.search_statements import SearchFilters, hits
from conversation_service.services.unit_of_work import UnitOfWork
from conversation_service.utils.cursors import CursorCodec, CursorError

_CURSOR_KIND: Final = "search"
# Content matches ranked per search: the newest this many in the caller's scope. Scoring every
# match made a query of common words cost in proportion to the history (docs/ARCHITECTURE.md).
RANK_WINDOW: Final = 1000


async def search(
    uow: UnitOfWork,
    principal: Principal,
    q: str,
    filters: SearchFilters,
    *,
    limit: int,
    cursor: str | None,
    codec: CursorCodec,
) -> dict[str, Any]:
    """One page of the principal's hits for ``q``, in the lists' envelope."""
    if not q.strip():
        raise ValidationError("q must contain something to search for")
    fingerprint = _fingerprint(principal, q, filters)
    offset = _decode_cursor(codec, cursor, fingerprint) if cursor is not None else 0
    query = parse(q)
    if query.matches_nothing:
        return {"data": [], "has_more": False, "next_cursor": None}
    rows = await hits(
        uow.conn, principal, query, filters, limit=limit + 1, offset=offset, window=RANK_WINDOW
    )
    has_more = len(rows) > limit
    data = [_hit(row, query) for row in rows[:limit]]
    next_cursor = (
        codec.encode({"k": _CURSOR_KIND, "f": fingerprint, "o": offset + limit})
        if has_more
        else None
    )
    return {"data": data, "has_more": has_more, "next_cursor": next_cursor}


def _fingerprint(principal: Principal, q: str, filters: SearchFilters) -> str:
    # A cursor continues the search it came from: another query, filter or caller is refused.
    raw = orjson.dumps(
        [principal.tenant_id, principal.user_id, q, asdict(filters)],
        default=str,
    )
    return hashlib.sha256(raw).hexdigest()[:24]


def _decode_cursor(codec: CursorCodec, cursor: str, fingerprint: str) -> int:
    try:
        payload = codec.decode(cursor)
        if payload.get("k") != _CURSOR_KIND or payload.get("f") != fingerprint:
            raise CursorError("cursor belongs to another search")
        offset = payload["o"]
        if not isinstance(offset, int) or offset < 0:
            raise CursorError("cursor is not well-formed")
    except (CursorError, KeyError) as exc:
        raise InvalidCursorError(str(exc)) from exc
    return offset


def _hit(row: Any, query: ParsedQuery) -> dict[str, Any]:
    spans = highlights(row.content, row.language, query)
    if spans or not row.title:
        shown = snippet(row.content, spans)
    else:  # a title match: show the title, where the match is
        shown = snippet(row.title, highlights(row.title, None, query))
    return {
        "conversation_id": row.conversation_id,
        "conversation_title": row.title,
        "message_id": row.id,
        "seq": row.seq,
        "role": row.role,
        "created_at": row.created_at,
        "score": round(float(row.score), 6),
        "snippet": shown,
    }


__all__ = ["SearchFilters", "search"]
