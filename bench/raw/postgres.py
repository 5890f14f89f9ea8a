"""asyncpg straight on the service's PostgreSQL database."""

import asyncio
import uuid

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from bench.raw.base import (
    HAS_TREE_POSTGRES,
    INSERT_COLUMNS,
    SELECT_COLUMNS,
    RawConnection,
    RawPool,
    new_message_row,
    seed_rows,
    tree_statements,
)

_CONNECT_TIMEOUT = 3.0

_PG_INSERT = (
    f"INSERT INTO messages ({', '.join(INSERT_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(INSERT_COLUMNS) + 1))}) RETURNING seq"
)
_PG_SELECT = (
    f"SELECT {', '.join(SELECT_COLUMNS)} FROM messages "
    "WHERE conversation_id = $1 AND deleted_at IS NULL ORDER BY seq DESC LIMIT $2"
)


def asyncpg_dsn(database_url: str) -> str:
    """The libpq-style DSN asyncpg wants, from a SQLAlchemy URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresConnection:
    """One asyncpg connection (statements are prepared and cached by asyncpg)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert_message(
        self, conversation_id: uuid.UUID, tenant_id: str, seq: int, content: str
    ) -> None:
        """Insert and commit one user message with the given ``seq``."""
        row = new_message_row(conversation_id, tenant_id, seq, content)
        await self._conn.fetchval(_PG_INSERT, *row)

    async def newest_messages(self, conversation_id: uuid.UUID, limit: int) -> int:
        """Fetch the newest ``limit`` visible messages; return how many rows came back."""
        return len(await self._conn.fetch(_PG_SELECT, conversation_id, limit))

    async def close(self) -> None:
        """Close the connection."""
        await self._conn.close()


class PostgresPool:
    """An asyncpg pool with its default settings (the release resets the session)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert_message(
        self, conversation_id: uuid.UUID, tenant_id: str, seq: int, content: str
    ) -> None:
        """Insert and commit one user message on a pooled connection."""
        row = new_message_row(conversation_id, tenant_id, seq, content)
        async with self._pool.acquire() as conn:
            await conn.fetchval(_PG_INSERT, *row)

    async def close(self) -> None:
        """Close every connection."""
        await self._pool.close()


class PostgresBackend:
    """asyncpg on the service's PostgreSQL database."""

    name = "postgres"

    def __init__(self, database_url: str) -> None:
        self.dsn = asyncpg_dsn(database_url)

    async def connect(self) -> RawConnection:
        """Open one connection."""
        return PostgresConnection(await asyncpg.connect(self.dsn))

    async def create_pool(self, size: int) -> RawPool:
        """Open a pool of ``size`` connections."""
        pool = await asyncpg.create_pool(self.dsn, min_size=size, max_size=size)
        return PostgresPool(pool)

    async def seed(
        self, conversation_id: uuid.UUID, tenant_id: str, count: int, content: str
    ) -> None:
        """COPY ``count`` messages in, update the conversation's counters, then ANALYZE."""
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "messages",
                    records=seed_rows(conversation_id, tenant_id, count, content),
                    columns=INSERT_COLUMNS,
                )
                await conn.execute(
                    "UPDATE conversations SET last_seq = $2, message_count = $3 WHERE id = $1",
                    conversation_id,
                    count,
                    count,
                )
                await link_postgres(conn, conversation_id)
            await conn.execute("ANALYZE messages")
        finally:
            await conn.close()

    async def remove_tenant(self, tenant_id: str) -> None:
        """Delete the tenant's conversations (their messages cascade)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("DELETE FROM conversations WHERE tenant_id = $1", tenant_id)
        finally:
            await conn.close()

    async def reachable(self) -> str | None:
        """None when a connection works, else why not."""
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                conn = await asyncpg.connect(self.dsn)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            return f"{type(exc).__name__}: {exc}"
        await conn.close()
        return None


async def link_postgres(conn: asyncpg.Connection, conversation_id: uuid.UUID) -> None:
    """Link a seeded conversation as one line of the tree, when the schema has trees."""
    if await conn.fetchval(HAS_TREE_POSTGRES):
        for statement in tree_statements("$1"):
            await conn.execute(statement, conversation_id)
