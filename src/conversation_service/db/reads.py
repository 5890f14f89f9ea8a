"""Hot reads on the driver: asyncpg on PostgreSQL, aiosqlite on SQLite, no SQLAlchemy engine.

The history page and the context window are the most frequent reads of the platform, and on
asyncpg SQLAlchemy's connection checkout, execution and result processing cost more CPU than
the query itself (measured in-process for a 50-message page: about 0.8 ms through
``engine.connect()`` + ``execute`` against 0.35 ms through an asyncpg pool). So on PostgreSQL
these reads run on a small asyncpg pool of their own. Their statements stay SQLAlchemy selects
(one source of truth, also used as they are on SQLite), compiled once for asyncpg and prepared
and cached by asyncpg. On SQLite the same holds for aiosqlite (7 ms of server CPU per context
window through the engine); a read runs on the event loop's own connection while it is quick
and moves to an aiosqlite thread when it is not (``SqliteReads``), with SQLAlchemy's own type
processors applied to parameters and values. Rows come back as mappings with the keys and
Python types of the SQLAlchemy path: ``UUID`` ids, aware UTC datetimes and decoded JSON.

Reads run outside a transaction, as the engine's autocommit reads do: each statement sees what
was committed when it started.
"""

import asyncio
import functools
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar, cast

import aiosqlite
import asyncpg  # type: ignore[import-untyped]
import orjson
from sqlalchemy import JSON, Dialect, Uuid
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.selectable import ExecutableReturnsRows

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.types import UTCDateTime

Row = Mapping[str, Any]

_PG_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
# Driver errors that mean "the database is unavailable right now" (a 503 worth a retry) on these
# connections, which raise the drivers' own errors rather than SQLAlchemy's wrappers: asyncpg's
# connection (class 08), operator intervention (57: shutdown, terminated backend, cancelled
# statement) and resource (53: too many connections) errors, its "connection is closed" and
# protocol-state errors (a backend terminated while the connection sat in the pool is noticed
# mid-statement), a reset socket, and SQLite's busy or locked database.
DRIVER_UNAVAILABLE: Final[tuple[type[Exception], ...]] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    sqlite3.OperationalError,
    ConnectionError,
)
# Read connections per process on SQLite (readers do not block each other or the writer).
SQLITE_READERS: Final = 2
# The longest a SQLite read may hold the event loop before it moves to a thread (seconds), and
# how often SQLite checks (virtual machine steps: a 50-message page takes about 2,400).
INLINE_BUDGET: Final = 0.001
_PROGRESS_STEPS: Final = 500


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the bound parameter of each placeholder, in order
    literals: dict[str, Any]  # values the statement carries itself (e.g. a LIMIT 1)
    binds: Mapping[str, Callable[[Any], Any]]  # bind processors (SQLite: ids, times, JSON)
    keys: tuple[str, ...]  # result column names
    # (column index, result processor) of the columns that need converting, each value anew
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]
    # (column index, result processor, column type) of the columns whose processor returns an
    # immutable value (SQLite ids and times): within one result, equal stored values share one
    # converted object (a window's rows all carry one conversation id, and most rows the same
    # creation and update time). One cache per type, so an id and a time never share an entry.
    shared: tuple[tuple[int, Callable[[Any], Any], type], ...] = ()

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The placeholders' values, through the bind processors (SQLite)."""
        values = {**self.literals, **params}
        binds = self.binds
        return [binds[name](values[name]) if name in binds else values[name] for name in self.names]

    def rows(self, raw: Iterable[Sequence[Any]]) -> list[Row]:
        """Driver rows as mappings, through the result processors (SQLite).

        Column by column (comprehensions over one column's values) rather than row by row
        with a loop over the converted columns inside: a third of the per-row cost.
        """
        fetched = list(raw)
        if not fetched:
            return []
        keys = self.keys
        if not self.processed and not self.shared:
            return [dict(zip(keys, row, strict=True)) for row in fetched]
        columns: list[Sequence[Any]] = list(zip(*fetched, strict=True))
        for index, process in self.processed:
            columns[index] = [None if v is None else process(v) for v in columns[index]]
        caches: dict[type, dict[Any, Any]] = {}
        for index, process, kind in self.shared:
            values, made = columns[index], caches.setdefault(kind, {None: None})
            for value in set(values).difference(made):
                made[value] = process(value)
            columns[index] = [made[v] for v in values]
        return [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]


class ReadQuery:
    """A prebuilt statement with named ``bindparam``s, compiled once per driver.

    A select, or a write with or without RETURNING (``services.fast_append``).
    """

    __slots__ = ("_compiled", "stmt")

    def __init__(self, stmt: ExecutableReturnsRows) -> None:
        self.stmt = stmt
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        """The statement for ``dialect``: SQL, parameter order and value processors."""
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.stmt.compile(dialect=dialect)
            names = tuple(compiled.positiontup or ())
            binds = {
                name: processor
                for name in set(names)
                if (processor := compiled.binds[name].type.bind_processor(dialect)) is not None
            }
            columns = tuple(self.stmt.exported_columns)
            processed: list[tuple[int, Callable[[Any], Any]]] = []
            shared: list[tuple[int, Callable[[Any], Any], type]] = []
            for index, column in enumerate(columns):
                result = _result_processor(column.type, dialect)
                if result is None:
                    continue
                if dialect.name == "sqlite" and isinstance(column.type, _IMMUTABLE):
                    shared.append((index, result, type(column.type)))
                else:
                    processed.append((index, result))
            found = _Compiled(
                sql=str(compiled),
                names=names,
                literals=dict(compiled.params),
                binds=binds,
                keys=tuple(str(column.key) for column in columns),
                processed=tuple(processed),
                shared=tuple(shared),
            )
            self._compiled[dialect.name] = found
        return found


# Column types whose Python values are immutable (a converted value may be shared).
_IMMUTABLE: Final = (UTCDateTime, Uuid)


def _result_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """SQLAlchemy's result processor, or an equivalent one for the hot types on SQLite.

    On SQLite a 50-message page converts 100 timestamps and 150 ids from text; SQLAlchemy's
    processors (regex parsing, ``UUID(hex)``) cost about 3 µs each, a third of the page's CPU.
    """
    processor: Callable[[Any], Any] | None = type_.result_processor(dialect, None)
    if dialect.name != "sqlite" or processor is None:
        return processor
    if isinstance(type_, UTCDateTime):
        return functools.partial(_sqlite_utc, processor)
    if isinstance(type_, Uuid):
        return functools.partial(_sqlite_uuid, processor)
    if isinstance(type_, JSON) and type_._str_impl.result_processor(dialect, None) is None:
        # SQLAlchemy's processor is "None stays None, else the dialect's deserializer"; the
        # caller keeps None, so the deserializer (orjson, C) is called without the wrapper.
        deserializer: Callable[[Any], Any] = dialect._json_deserializer or json.loads
        return deserializer
    return processor


def _sqlite_utc(fallback: Callable[[Any], Any], value: Any) -> Any:
    # The engine stores naive UTC text ("2026-01-02 03:04:05.000006"); fromisoformat is C.
    try:
        return datetime.fromisoformat(value + "+00:00")
    except (TypeError, ValueError):
        return fallback(value)


_new_object = object.__new__
_set_slot = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown  # an enum member lookup costs more than the rest


def _sqlite_uuid(fallback: Callable[[Any], Any], value: Any) -> Any:
    # Ids are stored as 32 hex digits. A UUID's whole state is its two slots, so filling them
    # directly gives the object UUID(hex) builds, without its string clean-up (3x faster).
    if isinstance(value, str) and len(value) == 32:
        try:
            number = int(value, 16)
        except ValueError:
            return fallback(value)
        made = _new_object(uuid.UUID)
        _set_slot(made, "int", number)
        _set_slot(made, "is_safe", _UNKNOWN_SAFETY)
        return made
    return fallback(value)


T = TypeVar("T")
# A read that depends on earlier ones, as a generator: it yields each (query, params) it needs,
# is sent that read's rows, and returns its result. ``ReadConnection.run`` drives it.
ReadPlan = Generator[tuple["ReadQuery", Mapping[str, Any]], Sequence[Row], T]


class ReadConnection(Protocol):
    """One connection for a few reads."""

    @property
    def dialect_name(self) -> str:
        """The database's SQLAlchemy dialect name (``sqlite``, ``postgresql``)."""
        ...

    async def fetch(self, query: ReadQuery, params: Mapping[str, Any]) -> Sequence[Row]:
        """All rows of ``query`` with ``params``."""
        ...

    async def run(self, plan: ReadPlan[T]) -> T:
        """Run the reads ``plan`` asks for, in order; its result."""
        ...


class _AwaitedPlans:
    """``run`` for connections whose reads are awaited one by one (all of them)."""

    __slots__ = ()

    async def fetch(self, query: ReadQuery, params: Mapping[str, Any]) -> Sequence[Row]:
        raise NotImplementedError

    async def run(self, plan: ReadPlan[T]) -> T:
        """Run the reads ``plan`` asks for, in order; its result."""
        try:
            step = next(plan)
            while True:
                step = plan.send(await self.fetch(*step))
        except StopIteration as done:
            return cast(T, done.value)


class EngineReadConnection(_AwaitedPlans):
    """Reads on a SQLAlchemy connection (SQLite, and callers that already hold one)."""

    __slots__ = ("conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    @property
    def dialect_name(self) -> str:
        """The engine's dialect name."""
        return self.conn.dialect.name

    async def fetch(self, query: ReadQuery, params: Mapping[str, Any]) -> Sequence[Row]:
        """All rows of ``query`` with ``params``."""
        result = await self.conn.execute(query.stmt, dict(params))
        # RowMapping is keyed by columns as well as by names, which the type cannot narrow.
        return cast(Sequence[Row], result.mappings().all())


class _AsyncpgReadConnection(_AwaitedPlans):
    __slots__ = ("conn",)
    dialect_name = "postgresql"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def fetch(self, query: ReadQuery, params: Mapping[str, Any]) -> Sequence[Row]:
        c = query.compiled(_PG_DIALECT)
        values = {**c.literals, **params} if c.literals else params
        rows: Sequence[Row] = await self.conn.fetch(c.sql, *[values[name] for name in c.names])
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
            try:
                yield _AsyncpgReadConnection(conn)
            except DRIVER_UNAVAILABLE:
                # Broken or in an unknown protocol state: never hand it out again (the pool
                # opens a new connection for the next request).
                conn.terminate()
                raise

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()


class _SqliteReadConnection:
    """Reads on a pooled aiosqlite connection, each one hop to its thread."""

    __slots__ = ("conn", "dialect")

    def __init__(self, conn: aiosqlite.Connection, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect

    async def fetch(self, query: ReadQuery, params: Mapping[str, Any]) -> Sequence[Row]:
        c = query.compiled(self.dialect)
        return c.rows(await self.conn.execute_fetchall(c.sql, c.args(params)))


class _InlineFirstConnection(_AwaitedPlans):
    """Each read on the event loop's thread if it is quick, else on a pooled thread."""

    __slots__ = ("reads",)

    dialect_name = "sqlite"

    def __init__(self, reads: "SqliteReads") -> None:
        self.reads = reads

    async def fetch(self, query: ReadQuery, params: Mapping[str, Any]) -> Sequence[Row]:
        rows = self.reads.fetch_inline(query, params)
        if rows is not None:
            return rows
        async with self.reads.pooled() as conn:
            return await conn.fetch(query, params)


class SqliteReads:
    """Hot reads on SQLite (WAL mode): inline on the event loop when quick, else on a thread.

    WAL lets readers run beside the one writer, so these reads neither wait for the engine's
    single connection nor hold it. A read first runs on a connection of the event loop's own
    thread: a history page takes about 0.2 ms there, and the hop to a connection's thread and
    back costs a third of that again. That read may block the loop for at most
    ``INLINE_BUDGET`` (a progress handler interrupts it) and never waits for a lock (no busy
    timeout): an interrupted or busy read runs again on a pooled aiosqlite connection of its
    own thread, which may take as long as it needs while the loop serves others. Values go
    through the same SQLAlchemy type processors as the engine's rows.
    """

    def __init__(self, path: str, dialect: Dialect, size: int) -> None:
        self.path = path
        self.dialect = dialect
        self.size = size
        self.inline_reads = 0
        self.thread_reads = 0  # reads that were too slow or busy inline
        self._inline: sqlite3.Connection | None = None
        self._deadline = 0.0
        self._idle: list[aiosqlite.Connection] = []
        self._opened = 0
        self._available = asyncio.Condition()

    def fetch_inline(self, query: ReadQuery, params: Mapping[str, Any]) -> list[Row] | None:
        """The rows, read on this thread within the budget; None when the read must move."""
        conn = self._inline
        if conn is None:
            conn = self._inline = self._open_inline()
        c = query.compiled(self.dialect)
        self._deadline = time.perf_counter() + INLINE_BUDGET
        try:
            # Fetched to the end before any conversion, so no statement stays open (holding a
            # read snapshot) if a value fails to convert.
            fetched = conn.execute(c.sql, c.args(params)).fetchall()
        except sqlite3.OperationalError:
            # Interrupted (over budget), busy or locked: the thread path waits and reports.
            self.thread_reads += 1
            return None
        self.inline_reads += 1
        return c.rows(fetched)

    def _open_inline(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        conn.execute("PRAGMA query_only=ON")
        clock = time.perf_counter
        conn.set_progress_handler(lambda: clock() > self._deadline, _PROGRESS_STEPS)
        return conn

    async def _open(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, timeout=30)
        await conn.execute("PRAGMA busy_timeout=30000")
        await conn.execute("PRAGMA query_only=ON")
        return conn

    async def _acquire(self) -> aiosqlite.Connection:
        async with self._available:
            while not self._idle and self._opened >= self.size:
                await self._available.wait()
            if self._idle:
                return self._idle.pop()
            self._opened += 1
        try:
            return await self._open()
        except BaseException:
            async with self._available:
                self._opened -= 1
                self._available.notify()
            raise

    async def _release(self, conn: aiosqlite.Connection) -> None:
        async with self._available:
            self._idle.append(conn)
            self._available.notify()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[ReadConnection]:
        """Reads inline first (``fetch_inline``), on a pooled connection otherwise."""
        yield _InlineFirstConnection(self)

    @asynccontextmanager
    async def pooled(self) -> AsyncIterator[_SqliteReadConnection]:
        """A pooled aiosqlite connection: every read on its thread."""
        conn = await self._acquire()
        try:
            yield _SqliteReadConnection(conn, self.dialect)
        finally:
            await self._release(conn)

    async def close(self) -> None:
        """Close the inline and the idle connections."""
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        async with self._available:
            idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


def sqlite_file(settings: ConversationSettings, engine: AsyncEngine) -> str | None:
    """The path of the database when it is a SQLite file (not in memory), else None."""
    database = make_url(settings.database_url).database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return database
    return None


async def open_reads(settings: ConversationSettings, engine: AsyncEngine) -> Reads:
    """asyncpg on PostgreSQL, aiosqlite on a SQLite file, the engine's connection otherwise."""
    if engine.dialect.name == "postgresql":
        return await AsyncpgReads.open(settings)
    path = sqlite_file(settings, engine)
    if path is not None:
        return SqliteReads(path, engine.dialect, size=SQLITE_READERS)
    return EngineReads(engine)
