"""Migrations run up and down on every backend; the schema matches the ORM tables."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.db.engine import DatabaseNotMigratedError, assert_migrated, create_engine
from conversation_service.db.migrate import upgrade_async
from conversation_service.db.tables import Base
from tests.conftest import make_settings, reset_schema


async def test_migrated_schema_matches_orm_tables(engine: AsyncEngine) -> None:
    def diff(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(sync_conn)  # type: ignore[arg-type]
        changes = compare_metadata(context, Base.metadata)
        # GIN indexes and the stored search vector exist on PostgreSQL only and FTS5 tables
        # (with their shadow tables) on SQLite only; all are declared in the migrations alone.
        engine_only = ("_gin", "_fts", "search_vector")
        return [c for c in changes if not any(name in str(c) for name in engine_only)]

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_assert_migrated_refuses_an_empty_database(tmp_path: object, redis_url: str) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/empty.db", redis_url)
    engine = create_engine(settings, null_pool=True)
    try:
        with pytest.raises(DatabaseNotMigratedError, match="conversation-service migrate"):
            await assert_migrated(engine)
        await upgrade_async(engine)
        await assert_migrated(engine)
        await reset_schema(engine)  # down and up again from a populated state
        await assert_migrated(engine)
    finally:
        await engine.dispose()
