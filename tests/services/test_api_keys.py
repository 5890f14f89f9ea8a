"""API keys: issued once, stored as a hash, authenticate as their user, revoked at once."""

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conversation_service.db.tables import api_keys_table
from conversation_service.errors import UnauthorizedError
from conversation_service.services import api_keys
from conversation_service.services.auth import Principal


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose transaction is rolled back after the test."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


async def stored_row(conn: AsyncConnection, key_id: uuid.UUID) -> dict[str, object]:
    row = (await conn.execute(select(api_keys_table).where(api_keys_table.c.id == key_id))).one()
    return dict(row._mapping)


async def test_an_issued_key_authenticates_as_its_tenant_and_user(conn: AsyncConnection) -> None:
    issued = await api_keys.create_api_key(conn, tenant_id="t-1", user_id="u-1", name="ci")
    assert issued.key.startswith("cs_")
    assert len(issued.key) >= 40
    assert issued.prefix == issued.key[:10]
    assert await api_keys.authenticate(conn, issued.key) == Principal("t-1", "u-1")


async def test_only_the_hash_of_the_key_is_stored(conn: AsyncConnection) -> None:
    issued = await api_keys.create_api_key(conn, tenant_id="t-1", user_id="u-1")
    row = await stored_row(conn, issued.id)
    assert row["key_hash"] == hashlib.sha256(issued.key.encode()).hexdigest()
    assert issued.key not in {str(value) for value in row.values()}
    assert (row["tenant_id"], row["user_id"], row["name"]) == ("t-1", "u-1", None)


async def test_every_key_is_different(conn: AsyncConnection) -> None:
    keys = [
        (await api_keys.create_api_key(conn, tenant_id="t", user_id="u")).key for _ in range(20)
    ]
    assert len(set(keys)) == 20


@pytest.mark.parametrize(
    "presented", ["", "cs_", "cs_" + "A" * 43, "sk-" + "A" * 43, "cs_" + "A" * 500]
)
async def test_unknown_or_malformed_keys_are_refused(conn: AsyncConnection, presented: str) -> None:
    await api_keys.create_api_key(conn, tenant_id="t-1", user_id="u-1")
    with pytest.raises(UnauthorizedError):
        await api_keys.authenticate(conn, presented)


async def test_a_revoked_key_is_refused_on_the_next_call(conn: AsyncConnection) -> None:
    issued = await api_keys.create_api_key(conn, tenant_id="t-1", user_id="u-1")
    other = await api_keys.create_api_key(conn, tenant_id="t-1", user_id="u-1")
    await api_keys.authenticate(conn, issued.key)
    await api_keys.revoke_api_key(conn, issued.id)
    with pytest.raises(UnauthorizedError, match="revoked"):
        await api_keys.authenticate(conn, issued.key)
    assert await api_keys.authenticate(conn, other.key) == Principal("t-1", "u-1")


async def test_revoking_twice_keeps_the_first_revocation(conn: AsyncConnection) -> None:
    issued = await api_keys.create_api_key(conn, tenant_id="t-1", user_id="u-1")
    await api_keys.revoke_api_key(conn, issued.id)
    first = (await stored_row(conn, issued.id))["revoked_at"]
    assert first is not None
    await api_keys.revoke_api_key(conn, issued.id)
    assert (await stored_row(conn, issued.id))["revoked_at"] == first


async def test_revoking_an_unknown_key_is_not_found(conn: AsyncConnection) -> None:
    with pytest.raises(api_keys.ApiKeyNotFoundError):
        await api_keys.revoke_api_key(conn, uuid.uuid4())


async def test_last_used_at_is_written_at_most_once_a_minute(conn: AsyncConnection) -> None:
    issued = await api_keys.create_api_key(conn, tenant_id="t-1", user_id="u-1")
    assert (await stored_row(conn, issued.id))["last_used_at"] is None
    await api_keys.authenticate(conn, issued.key)
    first = (await stored_row(conn, issued.id))["last_used_at"]
    assert first is not None
    await api_keys.authenticate(conn, issued.key)
    assert (await stored_row(conn, issued.id))["last_used_at"] == first

    stale = issued.created_at - timedelta(minutes=5)
    await conn.execute(
        update(api_keys_table).where(api_keys_table.c.id == issued.id).values(last_used_at=stale)
    )
    await api_keys.authenticate(conn, issued.key)
    assert (await stored_row(conn, issued.id))["last_used_at"] >= issued.created_at  # type: ignore[operator]
