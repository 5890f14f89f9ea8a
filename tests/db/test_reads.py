"""Hot reads convert SQLite values exactly as SQLAlchemy's own processors do, only faster, and
run on the event loop only while they are quick."""

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Uuid
from sqlalchemy.dialects import sqlite

from conversation_service.db.reads import ReadQuery, SqliteReads, _result_processor
from conversation_service.db.types import UTCDateTime

DIALECT = sqlite.dialect()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "stored",
    [
        "2026-12-02 04:12:45.123456",
        "2026-12-02 04:12:45.000000",
        "2026-12-02T04:12:45.5",
        "2026-12-02 04:12:45",
        "2026-12-02 04:12:45.123456+00:00",
    ],
)
def test_sqlite_timestamps_read_as_sqlalchemy_reads_them(stored: str) -> None:
    fast = _result_processor(UTCDateTime(), DIALECT)
    slow = UTCDateTime().result_processor(DIALECT, None)
    assert fast is not None
    assert slow is not None
    value = fast(stored)
    assert value == slow(stored)
    assert value.tzinfo is UTC
    assert isinstance(value, datetime)


@pytest.mark.parametrize(
    "stored",
    [uuid.uuid4().hex, uuid.UUID(int=0).hex, "F" * 32, str(uuid.uuid4())],
)
def test_sqlite_ids_read_as_sqlalchemy_reads_them(stored: str) -> None:
    fast = _result_processor(Uuid(), DIALECT)
    slow = Uuid().result_processor(DIALECT, None)
    assert fast is not None
    assert slow is not None
    value = fast(stored)
    expected = slow(stored)
    assert value == expected
    assert str(value) == str(expected)
    assert hash(value) == hash(expected)
    assert value.version == expected.version
    assert {value: 1}[expected] == 1


def test_malformed_sqlite_id_fails_as_sqlalchemy_does() -> None:
    fast = _result_processor(Uuid(), DIALECT)
    slow = Uuid().result_processor(DIALECT, None)
    assert fast is not None
    assert slow is not None
    with pytest.raises(ValueError, match="invalid literal") as expected:
        slow("z" * 32)
    with pytest.raises(ValueError, match="invalid literal") as raised:
        fast("z" * 32)
    assert str(raised.value) == str(expected.value)


def test_one_result_shares_equal_ids_and_times_but_never_json() -> None:
    """Equal stored ids and times convert once per result; JSON (mutable) converts per row."""
    table = sa.Table(
        "t",
        sa.MetaData(),
        sa.Column("id", Uuid()),
        sa.Column("owner", Uuid()),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("updated_at", UTCDateTime()),
        sa.Column("meta", sa.JSON()),
    )
    compiled = ReadQuery(sa.select(table)).compiled(DIALECT)
    owner, when = uuid.uuid4(), "2026-12-02 04:12:45.123456"
    first, second = uuid.uuid4(), uuid.uuid4()
    rows = compiled.rows(
        [
            (first.hex, owner.hex, when, when, '{"a": 1}'),
            (second.hex, owner.hex, when, "2026-12-02 04:12:46.000000", '{"a": 1}'),
        ]
    )
    assert [row["id"] for row in rows] == [first, second]
    assert rows[0]["owner"] is rows[1]["owner"] == owner
    assert rows[0]["created_at"] is rows[0]["updated_at"] is rows[1]["created_at"]
    assert rows[1]["updated_at"] == datetime(2026, 12, 2, 4, 12, 46, tzinfo=UTC)
    assert rows[0]["meta"] == rows[1]["meta"] == {"a": 1}
    assert rows[0]["meta"] is not rows[1]["meta"]


_ITEMS = sa.Table("items", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
_ALL_ITEMS = ReadQuery(sa.select(_ITEMS.c.id).order_by(_ITEMS.c.id))


@asynccontextmanager
async def _reads(path: Path, *, wal: bool) -> AsyncIterator[SqliteReads]:
    """``SqliteReads`` on a fresh database of 50 items, with or without WAL."""
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO items VALUES (?)", [(i,) for i in range(1, 51)])
    conn.close()
    reads = SqliteReads(str(path), DIALECT, size=1)
    try:
        yield reads
    finally:
        await reads.close()


async def test_a_quick_sqlite_read_runs_on_the_event_loop(tmp_path: Path) -> None:
    async with _reads(tmp_path / "db.sqlite", wal=True) as reads, reads.connection() as conn:
        rows = await conn.fetch(_ALL_ITEMS, {})
        assert [row["id"] for row in rows] == list(range(1, 51))
        assert (reads.inline_reads, reads.thread_reads) == (1, 0)


async def test_a_sqlite_read_over_the_inline_budget_finishes_on_a_thread(tmp_path: Path) -> None:
    count = 2_000_000  # far more than a millisecond of SQLite's work
    slow = ReadQuery(
        sa.text(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) "
            "SELECT count(*) AS n FROM c"
        )
        .bindparams(sa.bindparam("n", type_=sa.Integer()))
        .columns(sa.column("n", sa.Integer))
    )
    async with _reads(tmp_path / "db.sqlite", wal=True) as reads, reads.connection() as conn:
        rows = await conn.fetch(slow, {"n": count})
        assert rows[0]["n"] == count
        assert (reads.inline_reads, reads.thread_reads) == (0, 1)
        # The inline connection is fine after the interruption.
        assert len(await conn.fetch(_ALL_ITEMS, {})) == 50


async def test_a_sqlite_read_that_finds_the_database_locked_waits_on_a_thread(
    tmp_path: Path,
) -> None:
    # Without WAL a writer's exclusive lock keeps readers out: the inline read must not wait
    # for it on the event loop (which releases it here), the thread read must.
    async with _reads(tmp_path / "db.sqlite", wal=False) as reads:
        holder = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            holder.execute("INSERT INTO items VALUES (51)")
            asyncio.get_running_loop().call_later(0.2, holder.execute, "COMMIT")
            async with reads.connection() as conn:
                rows = await conn.fetch(_ALL_ITEMS, {})
            assert [row["id"] for row in rows] == list(range(1, 52))
            assert (reads.inline_reads, reads.thread_reads) == (0, 1)
        finally:
            holder.close()
