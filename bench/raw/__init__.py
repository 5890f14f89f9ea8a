"""Raw-driver baselines: the service's rows and queries straight through asyncpg and aiosqlite.

Rows are written the way the service writes them (UUIDv7 ids, the same columns and encodings), so
the only difference between a baseline and the service is the service.
"""

from bench.raw.base import RawBackend, RawConnection, RawPool
from bench.raw.postgres import PostgresBackend
from bench.raw.sqlite import SqliteBackend

__all__ = ["PostgresBackend", "RawBackend", "RawConnection", "RawPool", "SqliteBackend"]
