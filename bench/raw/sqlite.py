"""aiosqlite straight on the service's SQLite file, with the service's pragmas.

Values are encoded as SQLAlchemy stores them on SQLite: ids as 32-hex text, timestamps as naive
UTC text, JSON as text.
"""

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import aiosqlite
from sqlalchemy.engine import make_url

from bench.raw.base import (
    HAS_TREE_SQLITE,
    INSERT_COLUMNS,
    SELECT_COLUMNS,
    RawConnection,
    RawPool,
    new_message_row,
    seed_rows,
    tree_statements,
)

# The pragmas the service's engine sets on every connection.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)
_SEED_BATCH = 5_000

_SQLITE_INSERT = (
    f"INSERT INTO messages ({', '.join(INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in INSERT_COLUMNS)})"
)
_SQLITE_SELECT = (
    f"SELECT {', '.join(SELECT_COLUMNS)} FROM messages "
    "WHERE conversation_id = ? AND deleted_at IS NULL ORDER BY seq DESC LIMIT ?"
)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_sqlite_value(value) for value in row)


class SqliteConnection:
    """One aiosqlite connection with the service's pragmas."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def insert_message(
        self, conversation_id: uuid.UUID, tenant_id: str, seq: int, content: str
    ) -> None:
        """Insert and commit one user message with the given ``seq``."""
        row = _sqlite_row(new_message_row(conversation_id, tenant_id, seq, content))
        await self._db.execute(_SQLITE_INSERT, row)
        await self._db.commit()

    async def newest_messages(self, conversation_id: uuid.UUID, limit: int) -> int:
        """Fetch the newest ``limit`` visible messages; return how many rows came back."""
        rows = await self._db.execute_fetchall(_SQLITE_SELECT, (conversation_id.hex, limit))
        return len(list(rows))

    async def close(self) -> None:
        """Close the connection."""
        await self._db.close()


class SqlitePool:
    """``size`` aiosqlite connections handed out through a queue."""

    def __init__(self, connections: list[SqliteConnection]) -> None:
        self._all = connections
        self._idle: asyncio.Queue[SqliteConnection] = asyncio.Queue()
        for connection in connections:
            self._idle.put_nowait(connection)

    async def insert_message(
        self, conversation_id: uuid.UUID, tenant_id: str, seq: int, content: str
    ) -> None:
        """Insert and commit one user message on a pooled connection."""
        connection = await self._idle.get()
        try:
            await connection.insert_message(conversation_id, tenant_id, seq, content)
        finally:
            self._idle.put_nowait(connection)

    async def close(self) -> None:
        """Close every connection."""
        for connection in self._all:
            await connection.close()


class SqliteBackend:
    """aiosqlite on the service's SQLite file."""

    name = "sqlite"

    def __init__(self, database_url: str) -> None:
        database = make_url(database_url).database
        assert database, "a file database is needed to share it with the service"
        self.path = database

    async def _open(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, timeout=30)
        for pragma in SQLITE_PRAGMAS:
            await db.execute(pragma)
        return db

    async def connect(self) -> RawConnection:
        """Open one connection."""
        return SqliteConnection(await self._open())

    async def create_pool(self, size: int) -> RawPool:
        """Open a pool of ``size`` connections."""
        return SqlitePool([SqliteConnection(await self._open()) for _ in range(size)])

    async def seed(
        self, conversation_id: uuid.UUID, tenant_id: str, count: int, content: str
    ) -> None:
        """executemany ``count`` messages in one transaction and update the counters."""
        db = await self._open()
        try:
            batch: list[tuple[Any, ...]] = []
            for row in seed_rows(conversation_id, tenant_id, count, content):
                batch.append(_sqlite_row(row))
                if len(batch) == _SEED_BATCH:
                    await db.executemany(_SQLITE_INSERT, batch)
                    batch = []
            if batch:
                await db.executemany(_SQLITE_INSERT, batch)
            await db.execute(
                "UPDATE conversations SET last_seq = ?, message_count = ? WHERE id = ?",
                (count, count, conversation_id.hex),
            )
            await link_sqlite(db, conversation_id)
            await db.commit()
        finally:
            await db.close()

    async def remove_tenant(self, tenant_id: str) -> None:
        """Delete the tenant's conversations (their messages cascade)."""
        db = await self._open()
        try:
            await db.execute("DELETE FROM conversations WHERE tenant_id = ?", (tenant_id,))
            await db.commit()
        finally:
            await db.close()


async def link_sqlite(db: aiosqlite.Connection, conversation_id: uuid.UUID) -> None:
    """Link a seeded conversation as one line of the tree, when the schema has trees."""
    cursor = await db.execute(HAS_TREE_SQLITE)
    row = await cursor.fetchone()
    if row is not None and row[0]:
        for statement in tree_statements("?"):
            await db.execute(statement, (conversation_id.hex,))
