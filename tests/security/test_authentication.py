"""Every documented operation refuses every bad credential with 401, and writes nothing.

Bad user tokens: none, expired (beyond the leeway), signed with another secret, ``alg: none``
(with and without a signature part), a real signature over swapped claims, junk, missing claims.
Each credential kind is also refused where another is expected: a user JWT or an API key on the
internal API, the service key or an API key on the user API, a user JWT on the
OpenAI-compatible API.
"""

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import INTERNAL_KEY
from tests.routes.test_errors import assert_problem
from tests.security.conftest import (
    Victim,
    assert_untouched,
    bad_user_tokens,
    openai_ids,
    operations,
    send,
)
from tests.websocket.helpers import serve, ws_client, ws_url


def _refusals(victim: Victim, scheme: str) -> dict[str, dict[str, str]]:
    tokens = {
        name: {"Authorization": f"Bearer {t}"} for name, t in bad_user_tokens(victim.caller).items()
    }
    common = {
        "none": {},
        "not-bearer": {"Authorization": f"Basic {victim.caller.token}"},
        "empty-bearer": {"Authorization": "Bearer "},
        **tokens,
    }
    if scheme == "HTTPBearer":
        return {
            **common,
            "service-key": {"Authorization": f"Bearer {INTERNAL_KEY}"},
            "api-key": {"Authorization": f"Bearer {victim.api_key}"},
        }
    if scheme == "ServiceKey":
        return {
            **common,
            "user-token": victim.caller.headers,
            "api-key": {"Authorization": f"Bearer {victim.api_key}"},
            "service-key-prefix": {"Authorization": f"Bearer {INTERNAL_KEY[:-1]}"},
        }
    assert scheme == "ApiKey", scheme
    return {
        **common,
        "user-token": victim.caller.headers,
        "service-key": {"Authorization": f"Bearer {INTERNAL_KEY}"},
        "revoked-shape": {"Authorization": f"Bearer {victim.api_key[:-2]}xx"},
    }


async def test_every_operation_refuses_every_bad_credential_with_401(
    app: FastAPI, anon: httpx.AsyncClient, victim: Victim
) -> None:
    checked = 0
    for operation in operations(app):
        ids = openai_ids(victim.ids) if operation.scheme == "ApiKey" else victim.ids
        for name, headers in _refusals(victim, operation.scheme).items():
            response = await send(anon, operation, ids, headers)
            assert response.status_code == 401, (operation.name, name, response.text)
            if operation.scheme != "ApiKey":
                assert_problem(response, 401, "unauthorized")
                assert response.headers["www-authenticate"].startswith("Bearer")
            else:
                assert response.json()["error"]["code"] == "invalid_api_key"
            checked += 1
    assert checked > 400  # the document lists every route: the battery is not empty
    await assert_untouched(anon, victim)


async def test_the_sse_token_query_parameter_refuses_bad_tokens(
    anon: httpx.AsyncClient, victim: Victim
) -> None:
    url = f"/api/v1/conversations/{victim.ids['conversation_id']}/events"
    for name, token in bad_user_tokens(victim.caller).items():
        response = await anon.get(url, params={"token": token})
        assert response.status_code == 401, (name, response.text)


async def test_websockets_refuse_bad_tokens_with_4401(app: FastAPI, victim: Victim) -> None:
    async with serve(app) as base_url:
        for name, token in bad_user_tokens(victim.caller).items():
            async with ws_client(base_url, token) as client:
                with pytest.raises(ConnectionClosed) as closed:
                    await client.recv()
            assert closed.value.rcvd is not None, name
            assert closed.value.rcvd.code == 4401, name
        # The orchestrator's socket takes the service key only, never a user's token.
        for headers in (victim.caller.headers, {"Authorization": f"Bearer {victim.api_key}"}):
            async with connect(
                ws_url(base_url, "/internal/v1/ws/stream"), additional_headers=headers
            ) as agent:
                with pytest.raises(ConnectionClosed) as closed:
                    await agent.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4401
