"""Hot writes on SQLite: one thread with a sqlite3 connection of its own, one hop per transaction.

Through SQLAlchemy's async engine on aiosqlite, every statement of a transaction is a hop to the
connection's thread (about 60 µs of event-loop CPU each) on top of the engine's own execution
overhead: the general user-message append made 15 to 20 of them. Work given to
``SqliteWriter.transaction`` is a synchronous function that the writer thread runs whole,
``BEGIN IMMEDIATE`` to ``COMMIT``, so the event loop pays for one hop. Its statements are
SQLAlchemy statements compiled once (``ReadQuery``), their values passed through SQLAlchemy's own
type processors, so the rows are stored exactly as the engine stores them.

``BEGIN IMMEDIATE`` takes SQLite's write lock up front, so a transaction never has to upgrade a
read snapshot that another writer has made stale. The engine's connections (this process's, the
worker's) keep writing beside the writer: each waits for the other on the busy timeout.
"""

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Mapping
from queue import SimpleQueue
from typing import Any, TypeVar

from sqlalchemy import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.reads import ReadQuery, Row, sqlite_file

T = TypeVar("T")

# The engine's connection settings (``db.engine``): WAL, so the readers never block the writer.
_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


class WriteConnection:
    """The writer's connection inside a transaction, for the work running on its thread."""

    __slots__ = ("_conn", "_dialect")

    def __init__(self, conn: sqlite3.Connection, dialect: Dialect) -> None:
        self._conn = conn
        self._dialect = dialect

    def fetch(self, query: ReadQuery, params: Mapping[str, Any]) -> list[Row]:
        """Run ``query`` with ``params``; the rows it returns (RETURNING), converted."""
        c = query.compiled(self._dialect)
        return c.rows(self._conn.execute(c.sql, c.args(params)))

    def execute(self, query: ReadQuery, params: Mapping[str, Any]) -> None:
        """Run ``query`` with ``params``."""
        c = query.compiled(self._dialect)
        self._conn.execute(c.sql, c.args(params))


def _connect(path: str) -> sqlite3.Connection:
    # Autocommit mode (isolation_level None): transactions are exactly the BEGIN and COMMIT
    # written below, not sqlite3's implicit ones.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    return conn


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    # The awaiting task may have been cancelled meanwhile; the transaction's outcome stands.
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


_Work = tuple[asyncio.Future[Any], Callable[[WriteConnection], Any]]


class SqliteWriter:
    """The SQLite file's hot writer: transactions run one at a time on a thread of its own."""

    def __init__(self, conn: sqlite3.Connection, dialect: Dialect) -> None:
        self._conn = conn
        self._writes = WriteConnection(conn, dialect)
        self._loop = asyncio.get_running_loop()
        self._queue: SimpleQueue[_Work | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self._thread.start()

    @classmethod
    async def open(cls, path: str, dialect: Dialect) -> "SqliteWriter":
        """A writer on the database file at ``path`` (``dialect``: the engine's, for its types)."""
        return cls(await asyncio.to_thread(_connect, path), dialect)

    def transaction(self, work: Callable[[WriteConnection], T]) -> asyncio.Future[T]:
        """Run ``work`` on the writer thread in one transaction, rolled back if it raises.

        Work that changed nothing commits nothing, so it needs no rollback of its own.
        """
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put_nowait((future, work))
        return future

    def _serve(self) -> None:
        conn, writes, settle = self._conn, self._writes, self._loop.call_soon_threadsafe
        while (item := self._queue.get()) is not None:
            future, work = item
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(writes)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except BaseException as exc:  # handed to the awaiting task, which re-raises it
                settle(_settle, future, None, exc)
            else:
                settle(_settle, future, result, None)
        conn.close()

    async def close(self) -> None:
        """Finish the queued transactions, then close the connection."""
        self._queue.put_nowait(None)
        await asyncio.to_thread(self._thread.join)


async def open_writer(settings: ConversationSettings, engine: AsyncEngine) -> SqliteWriter | None:
    """The hot writer of a SQLite file database; None on PostgreSQL or in-memory SQLite."""
    path = sqlite_file(settings, engine)
    return await SqliteWriter.open(path, engine.dialect) if path is not None else None
