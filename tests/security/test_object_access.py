"""Another user's ids are 404 in every route, whoever asks: a neighbour in the same tenant, the
same user id in another tenant, a stranger; through the user API and the OpenAI-compatible one.
Nothing they send changes anything, and nothing tells them the object exists (never 403).
"""

import httpx
from fastapi import FastAPI

from tests.conftest import Caller, new_caller
from tests.security.conftest import (
    Victim,
    assert_untouched,
    issue_api_key,
    openai_ids,
    operations,
    send,
)


def intruders(victim: Victim) -> dict[str, Caller]:
    return {
        "neighbour": new_caller(victim.caller.tenant),
        "same-user-other-tenant": Caller(
            tenant=f"{victim.caller.tenant}-x", user=victim.caller.user
        ),
        "stranger": new_caller(),
    }


async def test_other_users_ids_are_404_in_every_route(
    app: FastAPI, anon: httpx.AsyncClient, victim: Victim
) -> None:
    checked = 0
    for who, intruder in intruders(victim).items():
        key = {"Authorization": f"Bearer {await issue_api_key(anon, intruder)}"}
        for operation in operations(app):
            if operation.scheme == "ServiceKey" or "{" not in operation.path:
                continue  # the orchestrator sees every tenant; collections are the caller's own
            if operation.scheme == "ApiKey":
                response = await send(anon, operation, openai_ids(victim.ids), key)
                assert response.status_code == 404, (who, operation.name, response.text)
                assert response.json()["error"]["type"] == "invalid_request_error"
            else:
                response = await send(anon, operation, victim.ids, intruder.headers)
                assert response.status_code == 404, (who, operation.name, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert victim.title not in response.text
            checked += 1
        purge = await anon.delete(
            f"/api/v1/conversations/{victim.ids['conversation_id']}",
            params={"purge": "true"},
            headers=intruder.headers,
        )
        assert purge.status_code == 404, who
        listed = await anon.get("/api/v1/conversations", headers=intruder.headers)
        assert victim.ids["conversation_id"] not in listed.text, who
    assert checked >= 3 * 20  # 16 user-API and 7 OpenAI-compatible operations take ids
    await assert_untouched(anon, victim)


async def test_an_unknown_id_and_a_foreign_id_answer_alike(
    anon: httpx.AsyncClient, victim: Victim
) -> None:
    """Same status, same type, same shape: existence does not leak through the answer."""
    intruder = new_caller(victim.caller.tenant)
    foreign = await anon.get(
        f"/api/v1/conversations/{victim.ids['conversation_id']}", headers=intruder.headers
    )
    unknown = await anon.get(
        "/api/v1/conversations/00000000-0000-7000-8000-000000000000", headers=intruder.headers
    )
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["type"] == unknown.json()["type"]
    assert set(foreign.json()) == set(unknown.json())
