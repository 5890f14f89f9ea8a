"""Hot reads on the driver: PostgreSQL through asyncpg directly, SQLite through SQLAlchemy.

The history page and the context window are the most frequent reads of the platform, and on
asyncpg SQLAlchemy's connection checkout, execution and result processing cost more CPU than
the query itself (measured in-process for a 50-message page: about 0.8 ms through
``engine.connect()`` + ``execute`` against 0.35 ms through an asyncpg pool). So on PostgreSQL
these reads run on a small asyncpg pool of their own. Their statements stay SQLAlchemy selects
(one source of truth, also used as they are on SQLite), compiled once for asyncpg and prepared
and cached by asyncpg. Rows come back as mappings with the keys and Python types of the
SQLAlchemy path: ``UUID`` ids, aware UTC datetimes and decoded JSON.

Reads run outside a transaction, as the engine's autocommit reads do: each statement sees what
was committed when it started.
"""

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
import orjson
from sqlalchemy import Select
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conversation_service.config.settings import ConversationSettings

Row = Mapping[str, Any]

_PG_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]


class ReadQuery:
    """A prebuilt select with named ``bindparam``s, compiled once per driver."""

    __slots__ = ("_pg", "stmt")

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt
        self._pg: tuple[str, tuple[str, ...], dict[str, Any]] | None = None

    def postgres(self) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        """SQL with ``$n`` placeholders, the parameter name of each, and literal values."""
        if self._pg is None:
            compiled = self.stmt.compile(dialect=_PG_DIALECT)
            names = tuple(compiled.positiontup or ())
            self._pg = (str(compiled), names, dict(compiled.params))
        return self._pg


class ReadConnection(Protocol):
    """One connection for a few reads."""

    async def fetch(self, query: ReadQuery, params: Mapping[str, Any]) -> Sequence[Row]:
        """All rows of ``query`` with ``params``."""
        ...


class EngineReadConnection:
    """Reads on a SQLAlchemy connection (SQLite, and callers that already hold one)."""

    __slots__ = ("conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def fetch(self, query: ReadQuery, params: Mapping[str, Any]) -> Sequence[Row]:
        """All rows of ``query`` with ``params``."""
        rows: Sequence[Row] = (await self.conn.execute(query.stmt, dict(params))).mappings().all()
        return rows


class _AsyncpgReadConnection:
    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def fetch(self, query: ReadQuery, params: Mapping[str, Any]) -> Sequence[Row]:
        sql, names, literals = query.postgres()
        values = {**literals, **params} if literals else params
        rows: Sequence[Row] = await self.conn.fetch(sql, *[values[name] for name in names])
        return rows


class Reads(Protocol):
    """Where hot reads get their connection."""

    def connection(self) -> Any:
        """``async with reads.connection() as rc``: a ``ReadConnection``."""
        ...

    async def close(self) -> None:
        """Release the connections."""
        ...


class EngineReads:
    """Hot reads on the application engine (SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[ReadConnection]:
        """An autocommit connection of the engine's pool."""
        async with self.engine.connect() as conn:
            yield EngineReadConnection(await conn.execution_options(isolation_level="AUTOCOMMIT"))

    async def close(self) -> None:
        """Nothing of its own to release (the engine is disposed by its owner)."""


async def _init_connection(conn: Any) -> None:
    # The same JSON codec as the engine (orjson), for json and jsonb columns.
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _reset_connection(conn: Any) -> None:
    # asyncpg's default reset (advisory locks, cursors, LISTEN, RESET ALL) is one more round
    # trip on every release; these connections only ever run single SELECTs, so at most an
    # interrupted statement can leave a transaction behind.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class AsyncpgReads:
    """Hot reads on an asyncpg pool of their own (PostgreSQL)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, settings: ConversationSettings) -> "AsyncpgReads":
        """A pool on ``settings.database_url`` sized like the engine's."""
        dsn = make_url(settings.database_url).set(drivername="postgresql")
        pool = await asyncpg.create_pool(
            dsn.render_as_string(hide_password=False),
            min_size=1,
            max_size=settings.db_pool_size,
            init=_init_connection,
            reset=_reset_connection,
        )
        return cls(pool)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[ReadConnection]:
        """A pooled asyncpg connection."""
        async with self.pool.acquire() as conn:
            yield _AsyncpgReadConnection(conn)

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()


async def open_reads(settings: ConversationSettings, engine: AsyncEngine) -> Reads:
    """asyncpg reads on PostgreSQL, the engine's connection elsewhere."""
    if engine.dialect.name == "postgresql":
        return await AsyncpgReads.open(settings)
    return EngineReads(engine)
