"""The SQLite writer runs each transaction whole on its thread, and shares the file with others."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, func, insert, select
from sqlalchemy.dialects import sqlite

from conversation_service.db.reads import ReadQuery
from conversation_service.db.writes import SqliteWriter, WriteConnection

DIALECT = sqlite.dialect()  # type: ignore[no-untyped-call]
items = Table("items", MetaData(), Column("n", Integer))
INSERT = ReadQuery(insert(items).values(n=bindparam("n", type_=Integer())))
COUNT = ReadQuery(select(func.count().label("count")).select_from(items))


@pytest.fixture
def path(tmp_path: Path) -> str:
    database = str(tmp_path / "writes.db")
    with closing(sqlite3.connect(database)) as conn:
        conn.execute("CREATE TABLE items (n INTEGER)")
    return database


@pytest.fixture
async def writer(path: str) -> AsyncIterator[SqliteWriter]:
    writer = await SqliteWriter.open(path, DIALECT)
    try:
        yield writer
    finally:
        await writer.close()


def _count(conn: WriteConnection) -> int:
    count: int = conn.fetch(COUNT, {})[0]["count"]
    return count


async def test_a_transaction_that_raises_writes_nothing_and_the_writer_goes_on(
    writer: SqliteWriter,
) -> None:
    def fail_halfway(conn: WriteConnection) -> None:
        conn.execute(INSERT, {"n": 1})
        raise LookupError("refused")

    with pytest.raises(LookupError, match="refused"):
        await writer.transaction(fail_halfway)
    assert await writer.transaction(_count) == 0

    def insert_two(conn: WriteConnection) -> int:
        conn.execute(INSERT, {"n": 2})
        conn.execute(INSERT, {"n": 3})
        return _count(conn)

    assert await writer.transaction(insert_two) == 2


async def test_the_writer_waits_for_another_connection_holding_the_write_lock(
    writer: SqliteWriter, path: str
) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO items (n) VALUES (1)")
        pending = asyncio.ensure_future(writer.transaction(_count))
        await asyncio.sleep(0.2)
        assert not pending.done()  # waiting on the busy timeout, not failing
        other.execute("COMMIT")
        assert await pending == 1
    finally:
        other.close()


async def test_close_finishes_the_queued_transactions(path: str) -> None:
    writer = await SqliteWriter.open(path, DIALECT)
    pending = [
        writer.transaction(lambda conn, n=n: conn.execute(INSERT, {"n": n})) for n in range(20)
    ]
    await writer.close()
    await asyncio.gather(*pending)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*), sum(n) FROM items").fetchone() == (20, 190)
