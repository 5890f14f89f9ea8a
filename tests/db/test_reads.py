"""Hot reads convert SQLite values exactly as SQLAlchemy's own processors do, only faster."""

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import Uuid
from sqlalchemy.dialects import sqlite

from conversation_service.db.reads import _result_processor
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
