"""On SQLite a history page is JSON built by the database: it must be byte for byte the page the
Python rendering gives (``message_wire`` through orjson), whatever the messages hold."""

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.db.engine import create_engine
from conversation_service.db.reads import SqliteReads, sqlite_file
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.services import message_store
from conversation_service.services.auth import Principal
from conversation_service.utils.cursors import CursorCodec
from tests.conftest import make_settings, reset_schema

_OWNER = Principal(tenant_id="t-wire", user_id="u-wire")
_CODEC = CursorCodec(b"wire-page-test-secret-32-bytes!!")

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1),  # hypothesis takes naive bounds
    max_value=datetime(2100, 1, 1),
    timezones=st.just(UTC),
) | st.builds(lambda t: t.replace(microsecond=0), st.datetimes(timezones=st.just(UTC)))


@st.composite
def _message(draw: st.DrawFn) -> dict[str, Any]:
    scored = draw(st.booleans())
    return {
        "role": draw(st.sampled_from(["user", "assistant", "tool", "system"])),
        "content": draw(st.text()),
        "content_parts": draw(st.none() | st.lists(st.dictionaries(st.text(), _json), max_size=2)),
        "status": draw(st.sampled_from(["completed", "streaming", "incomplete", "failed"])),
        "metadata": draw(st.dictionaries(st.text(), _json, max_size=4)),
        "token_count": draw(st.none() | st.integers(min_value=0, max_value=2**31 - 1)),
        "language": draw(st.none() | st.sampled_from(["en", "es"])),
        # Scores are rounded to 4 decimals where they are computed (analysis.sentiment).
        "sentiment_label": draw(st.sampled_from(["positive", "neutral", "negative"]))
        if scored
        else None,
        "sentiment_score": round(draw(st.floats(min_value=-1, max_value=1)), 4) if scored else None,
        "sentiment_model": "vader-3.3.2" if scored else None,
        "parent_id": draw(st.none() | st.uuids()),
        "created_at": draw(_times),
        "updated_at": draw(_times),
    }


@dataclass(frozen=True)
class _Database:
    """A migrated SQLite file, its engine and a read pool, on one event loop for all examples."""

    runner: asyncio.Runner
    engine: AsyncEngine
    reads: SqliteReads


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[_Database]:
    path: Path = tmp_path_factory.mktemp("wire") / "wire.db"
    app_settings = make_settings(f"sqlite+aiosqlite:///{path}", redis_url)
    with asyncio.Runner() as runner:
        engine = create_engine(app_settings)
        runner.run(reset_schema(engine))
        file = sqlite_file(app_settings, engine)
        assert file is not None
        reads = SqliteReads(file, engine.dialect, size=1)
        try:
            yield _Database(runner, engine, reads)
        finally:
            runner.run(reads.close())
            runner.run(engine.dispose())


async def _both_renderings(
    db: _Database, rows: list[dict[str, Any]], order: str, limit: int
) -> tuple[bytes, bytes]:
    conversation_id = uuid.uuid4()
    now = datetime.now(UTC)
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(conversations).values(
                id=conversation_id,
                tenant_id=_OWNER.tenant_id,
                user_id=_OWNER.user_id,
                agent_id="agent",
                status="active",
                priority="normal",
                metadata={},
                tags=[],
                created_at=now,
                updated_at=now,
            )
        )
        await conn.execute(
            insert(messages),
            [
                {
                    **row,
                    "id": uuid.uuid4(),
                    "conversation_id": conversation_id,
                    "tenant_id": _OWNER.tenant_id,
                    "seq": seq,
                }
                for seq, row in enumerate(rows, start=1)
            ],
        )
    page = message_store.PageRequest(None, None, order, limit)
    async with db.reads.connection() as rc:
        python = await message_store.list_messages(
            rc, _OWNER, conversation_id, page, codec=_CODEC, render=message_store.message_wire
        )
        database = await message_store.list_messages_json(
            rc, _OWNER, conversation_id, page, codec=_CODEC
        )
    return orjson.dumps(python, option=orjson.OPT_UTC_Z), database


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(_message(), min_size=1, max_size=3),
    order=st.sampled_from(["asc", "desc"]),
    limit=st.integers(min_value=1, max_value=3),
)
def test_the_database_renders_a_page_as_python_does(
    database: _Database, rows: list[dict[str, Any]], order: str, limit: int
) -> None:
    python, built = database.runner.run(_both_renderings(database, rows, order, limit))
    assert built == python
    assert orjson.loads(built)["has_more"] == (len(rows) > limit)
