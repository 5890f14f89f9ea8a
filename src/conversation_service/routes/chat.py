"""The chat page at ``/`` (plain HTML, CSS and JavaScript; no build step) and its dev token.

The page is a client of the public API like any other: REST under ``/api/v1`` and the realtime
WebSocket ``/api/v1/ws``. It is served when ``chat_page_enabled`` (default: development only).

``GET /dev/token`` exists only in development: it mints a user JWT with the development secret
(tenant ``dev``, user ``dev-user`` unless ``?user=`` names another), so the page works with no
login. It is never routed in any other environment.
"""

import warnings
from importlib import resources as package_files
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from conversation_service.config.settings import ConversationSettings, Environment
from conversation_service.errors import ServiceUnavailableError
from conversation_service.services.auth import issue_token

DEV_TENANT: Final = "dev"
DEV_USER: Final = "dev-user"
DEV_TOKEN_TTL: Final = 12 * 60 * 60


class DevToken(BaseModel):
    """A development user token."""

    token: str
    tenant: str
    user: str
    expires_in: int


def static_dir() -> Path:
    """The package's ``static/`` directory."""
    return Path(str(package_files.files("conversation_service") / "static"))


def dev_token(settings: ConversationSettings, user: str = DEV_USER) -> DevToken | None:
    """A token for the development user, or None when no HS256 secret is configured."""
    secret = settings.effective_jwt_secret()
    if secret is None:
        return None
    with warnings.catch_warnings():
        # The well-known development secret is short on purpose; PyJWT warns about it.
        warnings.simplefilter("ignore")
        token = issue_token(secret, tenant=DEV_TENANT, user=user, ttl_seconds=DEV_TOKEN_TTL)
    return DevToken(token=token, tenant=DEV_TENANT, user=user, expires_in=DEV_TOKEN_TTL)


def install(app: FastAPI, settings: ConversationSettings) -> None:
    """Route ``/`` and ``/static`` when the page is enabled, ``/dev/token`` in development."""
    router = APIRouter(include_in_schema=False)
    if settings.effective_chat_page_enabled():
        index = static_dir() / "index.html"

        @router.get("/")
        async def chat_page() -> FileResponse:
            """The chat page."""
            return FileResponse(index, headers={"Cache-Control": "no-cache"})

        app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    if settings.environment is Environment.DEVELOPMENT:

        @router.get("/dev/token")
        async def issue_dev_token(
            user: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[\w.-]+$")] = (
                DEV_USER
            ),
        ) -> DevToken:
            """A user token for the development tenant (development only)."""
            token = dev_token(settings, user)
            if token is None:
                raise ServiceUnavailableError("no HS256 secret to mint development tokens with")
            return token

    app.include_router(router)
