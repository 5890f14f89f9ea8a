"""The context endpoint's reads straight through the driver: the ``context`` baseline.

``window`` runs what ``memory_manager.context_window`` reads for one window, with the same SQL
as the service's statements compile to: the newest summary, the always-included rows, then the
newest rows after the summary's cut point, newest first in chunks of 64 until the token budget is
spent (``_recent``: stop when a full chunk took the total past the room left, unless the last row
is a tool result). ``full=True`` adds the endpoint's three other reads (the conversation's memory
policy, the live session, the tracked context), so the table can tell query count from overhead.

``seed_history`` writes a history as production has it: user/assistant turns whose token columns
vary (20-60 tokens, content about 4 characters a token) and a summary covering all but the
newest ``SUMMARY_GAP`` messages.
"""

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aiosqlite
import asyncpg  # type: ignore[import-untyped]

from bench.raw.base import INSERT_COLUMNS, SELECT_COLUMNS, message_row, new_id
from bench.raw.postgres import PostgresBackend, link_postgres
from bench.raw.sqlite import SQLITE_PRAGMAS, SqliteBackend, link_sqlite
from conversation_service.db.tables import summaries_table
from conversation_service.services.memory_manager import CHUNK
from conversation_service.services.sessions import TTL as SESSION_TTL
from conversation_service.services.summaries import summary_message_tokens

SUMMARY_GAP = 200
TOKENS = (20, 60)
WINDOW_COLUMNS = (*SELECT_COLUMNS, "tokens_cl100k", "tokens_o200k")
# The message a summary ends at is set by ``link_*`` where the schema has it (0006+).
SUMMARY_COLUMNS = tuple(
    column.name for column in summaries_table.c if column.name != "covers_until_message_id"
)
_SEQ = WINDOW_COLUMNS.index("seq")
_ROLE = WINDOW_COLUMNS.index("role")
_COVERS = SUMMARY_COLUMNS.index("covers_until_seq")
_WORDS = (
    "invoice",
    "quarter",
    "customer",
    "account",
    "order",
    "refund",
    "shipping",
    "delay",
    "contract",
    "renewal",
    "support",
    "ticket",
    "payment",
    "discount",
    "region",
    "forecast",
    "budget",
    "report",
    "meeting",
    "summary",
    "question",
    "answer",
    "please",
    "thanks",
    "could",
    "would",
    "should",
    "review",
    "update",
    "status",
    "priority",
    "escalate",
    "policy",
)
_SUMMARY_TEXT = (
    "The user asked about the last three invoices for ACME Corp, a delayed shipment to the "
    "northern region and the renewal terms of their support contract. The assistant listed the "
    "invoices, flagged an unusual discount on the second one, explained the delay and offered "
    "to escalate the renewal question to the account manager. "
) * 4


class WindowReader(Protocol):
    """One driver connection running the endpoint's reads."""

    async def window(
        self, conversation_id: uuid.UUID, *, max_tokens: int, encoding: str, full: bool = False
    ) -> int:
        """Read one window (``encoding``: ``cl100k`` or ``o200k``); return the rows fetched."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


def _select(table: str, columns: Sequence[str]) -> str:
    return f"SELECT {', '.join(f'{table}.{c}' for c in columns)} FROM {table} "


@dataclass(frozen=True, slots=True)
class _Sql:
    """The statements of one dialect, as SQLAlchemy renders the service's queries."""

    policy: str
    summary: str
    always: str
    first_chunk: str
    next_chunk: str
    session: str
    tracked: str


def _statements(*, offset: str) -> _Sql:
    """The statements with ``?`` placeholders; ``offset`` follows a bound LIMIT (SQLite)."""
    msgs = _select("messages", WINDOW_COLUMNS)
    recent = msgs + "WHERE messages.conversation_id = ? AND messages.deleted_at IS NULL "
    return _Sql(
        policy="SELECT conversations.memory_policy FROM conversations "
        "WHERE conversations.id = ? AND conversations.deleted_at IS NULL",
        summary=_select("summaries", SUMMARY_COLUMNS)
        + f"WHERE summaries.conversation_id = ? ORDER BY summaries.version DESC LIMIT ?{offset}",
        # The bare column, as the service states it: it matches the partial index's predicate.
        always=msgs + "WHERE messages.conversation_id = ? AND messages.always_include "
        "AND messages.deleted_at IS NULL ORDER BY messages.seq",
        first_chunk=recent + f"AND messages.seq > ? ORDER BY messages.seq DESC LIMIT ?{offset}",
        next_chunk=recent
        + f"AND messages.seq > ? AND messages.seq < ? ORDER BY messages.seq DESC LIMIT ?{offset}",
        session="SELECT sessions.id FROM sessions WHERE sessions.conversation_id = ? "
        "AND sessions.ended_at IS NULL AND sessions.last_activity_at > ? "
        f"ORDER BY sessions.id DESC LIMIT ?{offset}",
        tracked=_select(
            "tracked_contexts",
            ("conversation_id", "tenant_id", "version", "data", "updated_at", "updated_by"),
        )
        + "WHERE tracked_contexts.conversation_id = ?",
    )


def _numbered(text: str) -> str:
    """``?`` placeholders as asyncpg's ``$1``, ``$2``…"""
    parts = text.split("?")
    return "".join(
        part + (f"${i}" if i < len(parts) else "") for i, part in enumerate(parts, start=1)
    )


_SQLITE = _statements(offset=" OFFSET 0")
_PG = _statements(offset="")
PG_SQL = _Sql(**{name: _numbered(getattr(_PG, name)) for name in _Sql.__dataclass_fields__})
SQLITE_SQL = _SQLITE


class _Reader:
    """The window logic, shared; subclasses run one statement and return its rows."""

    sql: _Sql

    async def _fetch(self, statement: str, *params: Any) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    def _id(self, value: uuid.UUID) -> Any:
        return value

    def _time(self, value: datetime) -> Any:
        return value

    async def window(
        self, conversation_id: uuid.UUID, *, max_tokens: int, encoding: str, full: bool = False
    ) -> int:
        """Read one window; return the rows fetched."""
        cid = self._id(conversation_id)
        sql = self.sql
        if full:
            await self._fetch(sql.policy, cid)
        found = await self._fetch(sql.summary, cid, 1)
        summary = found[0] if found else None
        column = f"tokens_{encoding}"
        summary_tokens = summary[SUMMARY_COLUMNS.index(column)] if summary else 0
        floor = summary[_COVERS] if summary else 0
        tokens = WINDOW_COLUMNS.index(column)
        always = await self._fetch(sql.always, cid)
        room = max_tokens - summary_tokens - sum(row[tokens] for row in always)
        rows: list[Sequence[Any]] = []
        spent = 0
        below: int | None = None
        while True:
            if below is None:
                chunk = await self._fetch(sql.first_chunk, cid, floor, CHUNK)
            else:
                chunk = await self._fetch(sql.next_chunk, cid, floor, below, CHUNK)
            rows.extend(chunk)
            spent += sum(row[tokens] for row in chunk)
            if len(chunk) < CHUNK:
                break
            below = chunk[-1][_SEQ]
            if spent > room and rows[-1][_ROLE] != "tool":
                break
        if full:
            since = self._time(datetime.now(UTC) - SESSION_TTL)
            await self._fetch(sql.session, cid, since, 1)
            await self._fetch(sql.tracked, cid)
        return len(rows) + len(always) + (1 if summary else 0)


class PostgresWindowReader(_Reader):
    """asyncpg (statements prepared and cached by asyncpg, as SQLAlchemy's dialect does)."""

    sql = PG_SQL

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def _fetch(self, statement: str, *params: Any) -> Sequence[Sequence[Any]]:
        rows: list[Sequence[Any]] = await self._conn.fetch(statement, *params)
        return rows

    async def close(self) -> None:
        """Close the connection."""
        await self._conn.close()


def _sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class SqliteWindowReader(_Reader):
    """aiosqlite with the service's pragmas; ids as 32-hex text, times as naive UTC text."""

    sql = SQLITE_SQL

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    def _id(self, value: uuid.UUID) -> Any:
        return value.hex

    def _time(self, value: datetime) -> Any:
        return _sqlite_time(value)

    async def _fetch(self, statement: str, *params: Any) -> Sequence[Sequence[Any]]:
        return list(await self._db.execute_fetchall(statement, params))

    async def close(self) -> None:
        """Close the connection."""
        await self._db.close()


async def open_sqlite(path: str) -> aiosqlite.Connection:
    """An aiosqlite connection with the service's pragmas."""
    db = await aiosqlite.connect(path, timeout=30)
    for pragma in SQLITE_PRAGMAS:
        await db.execute(pragma)
    return db


async def open_reader(backend: PostgresBackend | SqliteBackend) -> WindowReader:
    """A window reader on ``backend``'s database."""
    if isinstance(backend, PostgresBackend):
        return PostgresWindowReader(await asyncpg.connect(backend.dsn))
    return SqliteWindowReader(await open_sqlite(backend.path))


def _content(rng: random.Random, tokens: int) -> str:
    words: list[str] = []
    length = 0
    while length < tokens * 4:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words).capitalize() + "."


def history_rows(
    conversation_id: uuid.UUID, tenant_id: str, count: int
) -> Iterator[tuple[Any, ...]]:
    """``count`` alternating user/assistant rows (seq 1..count) with 20-60 tokens each."""
    rng = random.Random(count)
    start = datetime.now(UTC) - timedelta(seconds=count)
    for seq in range(1, count + 1):
        tokens = rng.randint(*TOKENS)
        row = dict(
            zip(
                INSERT_COLUMNS,
                message_row(
                    conversation_id,
                    tenant_id,
                    seq,
                    _content(rng, tokens),
                    start + timedelta(seconds=seq),
                ),
                strict=True,
            )
        )
        row["role"] = "user" if seq % 2 else "assistant"
        # Token columns count the chat-format overhead: the two encodings differ a little.
        row.update(token_count=tokens, tokens_o200k=tokens, tokens_cl100k=tokens + seq % 3)
        yield tuple(row[name] for name in INSERT_COLUMNS)


def summary_values(conversation_id: uuid.UUID, tenant_id: str, covers: int) -> tuple[Any, ...]:
    """A version-1 extractive summary covering seq 1..``covers``, in ``SUMMARY_COLUMNS`` order."""
    values = {
        "id": new_id(),
        "conversation_id": conversation_id,
        "tenant_id": tenant_id,
        "version": 1,
        "covers_until_seq": covers,
        "content": _SUMMARY_TEXT,
        "token_count": summary_message_tokens(_SUMMARY_TEXT, "o200k_base"),
        "tokens_cl100k": summary_message_tokens(_SUMMARY_TEXT, "cl100k_base"),
        "tokens_o200k": summary_message_tokens(_SUMMARY_TEXT, "o200k_base"),
        "method": "extractive",
        "created_at": datetime.now(UTC),
    }
    return tuple(values[name] for name in SUMMARY_COLUMNS)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return _sqlite_time(value)
    return value


_SEED_BATCH = 5_000


async def seed_history(
    backend: PostgresBackend | SqliteBackend,
    conversation_id: uuid.UUID,
    tenant_id: str,
    count: int,
) -> int | None:
    """Write the history and, past ``SUMMARY_GAP`` messages, its summary; return its cut point."""
    covers = count - SUMMARY_GAP if count > SUMMARY_GAP else None
    counters = (count, count, count * sum(TOKENS) // 2)
    update = "UPDATE conversations SET last_seq = {}, message_count = {}, token_count = {} "
    if isinstance(backend, PostgresBackend):
        conn = await asyncpg.connect(backend.dsn)
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "messages",
                    records=history_rows(conversation_id, tenant_id, count),
                    columns=INSERT_COLUMNS,
                )
                if covers is not None:
                    await conn.copy_records_to_table(
                        "summaries",
                        records=[summary_values(conversation_id, tenant_id, covers)],
                        columns=SUMMARY_COLUMNS,
                    )
                await conn.execute(
                    update.format("$2", "$3", "$4") + "WHERE id = $1", conversation_id, *counters
                )
                await link_postgres(conn, conversation_id)
            await conn.execute("ANALYZE messages")
            await conn.execute("ANALYZE summaries")
        finally:
            await conn.close()
        return covers
    placeholders = ", ".join("?" for _ in INSERT_COLUMNS)
    insert = f"INSERT INTO messages ({', '.join(INSERT_COLUMNS)}) VALUES ({placeholders})"
    db = await open_sqlite(backend.path)
    try:
        batch: list[tuple[Any, ...]] = []
        for row in history_rows(conversation_id, tenant_id, count):
            batch.append(tuple(_sqlite_value(value) for value in row))
            if len(batch) == _SEED_BATCH:
                await db.executemany(insert, batch)
                batch = []
        if batch:
            await db.executemany(insert, batch)
        if covers is not None:
            summary = summary_values(conversation_id, tenant_id, covers)
            await db.execute(
                f"INSERT INTO summaries ({', '.join(SUMMARY_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in SUMMARY_COLUMNS)})",
                tuple(_sqlite_value(value) for value in summary),
            )
        await db.execute(
            update.format("?", "?", "?") + "WHERE id = ?", (*counters, conversation_id.hex)
        )
        await link_sqlite(db, conversation_id)
        await db.commit()
    finally:
        await db.close()
    return covers
