"""Under the OpenAI prefix every error is in OpenAI's shape, whatever produced it; elsewhere
errors stay problem+json."""

from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from conversation_service.routes.openai_errors import OpenAIErrorMiddleware, param_from_loc
from tests.routes.test_errors import assert_problem


def assert_openai_error(
    response: httpx.Response, status: int, code: str | None, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]
    return error


async def test_router_errors_under_the_prefix_are_openai_shaped(anon: httpx.AsyncClient) -> None:
    assert_openai_error(await anon.get("/v1/nothing-here"), 404, "not_found")
    assert_openai_error(await anon.put("/v1/conversations"), 405, "method_not_allowed")


async def test_a_missing_key_is_401_invalid_api_key_with_its_challenge(
    anon: httpx.AsyncClient,
) -> None:
    response = await anon.get("/v1/conversations/conv_0")
    assert_openai_error(response, 401, "invalid_api_key")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_body_guard_errors_under_the_prefix_are_openai_shaped(
    anon: httpx.AsyncClient,
) -> None:
    not_json = await anon.post(
        "/v1/conversations", content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert_openai_error(not_json, 415, "unsupported_media_type")
    too_big = await anon.post(
        "/v1/conversations",
        content=b'{"metadata": "' + b"x" * 1_100_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert_openai_error(too_big, 413, "payload_too_large")
    malformed = await anon.post(
        "/v1/conversations", content=b'{"items": [', headers={"Content-Type": "application/json"}
    )
    assert_openai_error(malformed, 400, "malformed_json")


async def test_other_prefixes_keep_problem_json(anon: httpx.AsyncClient) -> None:
    assert_problem(await anon.get("/api/v1/nothing-here"), 404)
    assert_problem(await anon.get("/v1x/conversations"), 404)


@pytest.mark.parametrize(
    ("loc", "param"),
    [
        (["query", "limit"], "limit"),
        (["query", "include[]", "0"], "include[0]"),
        (["body", "items", "0", "content", "1", "input_text", "text"], "items[0].content[1].text"),
        (["body", "metadata", "function-after[_check(), dict[str,str]]"], "metadata"),
        (["body", "metadata", "bad\u0000key", "[key]"], "metadata.bad\u0000key"),
        (["body"], None),
    ],
)
def test_param_is_named_as_openai_names_it(loc: list[str], param: str | None) -> None:
    assert param_from_loc(loc) == param


async def test_an_unexpected_failure_is_a_500_server_error() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    app = OpenAIErrorMiddleware(broken, prefix="/v1")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        error = assert_openai_error(await client.get("/v1/conversations"), 500, "internal_error")
    assert "boom" not in error["message"]
