"""Hot reads convert SQLite values exactly as SQLAlchemy's own processors do, only faster."""

import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import Uuid
from sqlalchemy.dialects import sqlite

from conversation_service.db.reads import ReadQuery, _result_processor
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
