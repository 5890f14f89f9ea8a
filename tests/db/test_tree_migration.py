"""Revision 0006 turns every existing history into one line of a tree, on both backends."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import TextClause, Uuid, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from conversation_service.db.migrate import upgrade_async
from conversation_service.db.types import UTCDateTime
from tests.conftest import BACKENDS, POSTGRES_URL


@pytest.fixture(params=BACKENDS)
async def blank(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a database of its own (the session's schema is left alone)."""
    if request.param == "sqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/tree.db")
        yield engine
        await engine.dispose()
        return
    assert POSTGRES_URL is not None
    name = f"tree_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    engine = create_async_engine(POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execute(text(f"DROP DATABASE {name}"))
        await admin.dispose()


def typed(sql: str, *ids: str) -> TextClause:
    """Raw SQL with its id and time parameters typed, as the driver of each backend wants."""
    return text(sql).bindparams(
        *(bindparam(name, type_=Uuid()) for name in ids), bindparam("now", type_=UTCDateTime())
    )


async def test_existing_histories_become_one_line_with_the_newest_message_as_active_leaf(
    blank: AsyncEngine,
) -> None:
    await upgrade_async(blank, "0005")
    cid, ids = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
    now = datetime.now(UTC)
    async with blank.begin() as conn:
        await conn.execute(
            typed(
                "INSERT INTO conversations (id, tenant_id, user_id, agent_id, status, priority,"
                " metadata, tags, last_seq, message_count, token_count, sentiment_count,"
                " created_at, updated_at) VALUES (:id, 't', 'u', 'a', 'active', 'normal', '{}',"
                " '[]', 3, 3, 0, 0, :now, :now)",
                "id",
            ),
            {"id": cid, "now": now},
        )
        for seq, mid in enumerate(ids, start=1):
            await conn.execute(
                typed(
                    "INSERT INTO messages (id, conversation_id, tenant_id, seq, role, content,"
                    " status, metadata, tokens_cl100k, tokens_o200k, always_include, parent_id,"
                    " created_at, updated_at) VALUES (:id, :cid, 't', :seq, 'user', 'x',"
                    " 'completed', '{}', 1, 1, false, :stray, :now, :now)",
                    "id",
                    "cid",
                    "stray",
                ),
                # A client-chosen parent_id nothing used: the line wins.
                {"id": mid, "cid": cid, "seq": seq, "stray": uuid.uuid4(), "now": now},
            )
    await upgrade_async(blank)
    async with blank.connect() as conn:
        rows = (
            await conn.execute(text("SELECT id, parent_id, branch_id FROM messages ORDER BY seq"))
        ).all()
        leaf = await conn.scalar(text("SELECT active_leaf_id FROM conversations"))

    def as_uuid(value: object) -> uuid.UUID | None:
        return None if value is None else uuid.UUID(str(value))

    assert [as_uuid(r.parent_id) for r in rows] == [None, *ids[:2]]
    assert {as_uuid(r.branch_id) for r in rows} == {cid}
    assert as_uuid(leaf) == ids[-1]
