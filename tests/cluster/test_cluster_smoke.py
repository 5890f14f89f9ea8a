"""Smoke: the app runs on the cluster."""

import httpx

from tests.conftest import create_conversation


async def test_smoke(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    r = await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    assert r.status_code == 201
    assert (await client.get("/health/ready")).status_code == 200
