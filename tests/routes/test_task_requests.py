"""Task requests refused by the model change nothing (found by schemathesis)."""

import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.constants import MAX_SEQ
from conversation_service.db.tables import jobs_table
from tests.conftest import create_conversation
from tests.websocket.helpers import SERVICE


@pytest.mark.parametrize("archived", [False, True])
@pytest.mark.parametrize("until_seq", [2**64, MAX_SEQ + 1, 0])
async def test_a_summary_up_to_a_seq_no_column_holds_is_422_and_records_no_job(
    client: httpx.AsyncClient, engine: AsyncEngine, until_seq: int, archived: bool
) -> None:
    cid = (await create_conversation(client))["id"]
    if archived:
        await client.post(f"/api/v1/conversations/{cid}/archive")
    response = await client.post(
        f"/internal/v1/conversations/{cid}/tasks",
        json={"kind": "summary", "until_seq": until_seq},
        headers=SERVICE,
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(jobs_table)
            .where(jobs_table.c.conversation_id == uuid.UUID(cid))
        )
    assert count == 0
