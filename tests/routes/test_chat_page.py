"""The chat page at ``/`` and ``GET /dev/token``: development only unless configured."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from conversation_service.config.settings import ConversationSettings, Environment
from conversation_service.main import create_app
from tests.conftest import make_settings


@asynccontextmanager
async def app_client(
    settings: ConversationSettings, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(settings.database_url, settings.redis_url, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_development_serves_the_page_its_files_and_a_working_token(
    settings: ConversationSettings,
) -> None:
    async with app_client(settings, environment=Environment.DEVELOPMENT) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/static/app.js">' in page.text
        script = await client.get("/static/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert (await client.get("/static/app.css")).status_code == 200
        issued = await client.get("/dev/token")
        assert issued.status_code == 200
        body = issued.json()
        assert (body["tenant"], body["user"]) == ("dev", "dev-user")
        listed = await client.get(
            "/api/v1/conversations", headers={"Authorization": f"Bearer {body['token']}"}
        )
        assert listed.status_code == 200


async def test_other_environments_have_neither_page_nor_token(
    settings: ConversationSettings,
) -> None:
    async with app_client(settings) as client:
        assert (await client.get("/")).status_code == 404
        assert (await client.get("/dev/token")).status_code == 404
        assert "/dev/token" not in (await client.get("/openapi.json")).text


async def test_the_page_can_be_enabled_without_the_dev_token(
    settings: ConversationSettings,
) -> None:
    async with app_client(settings, chat_page_enabled=True) as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/dev/token")).status_code == 404
