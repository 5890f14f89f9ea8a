"""Per-user export: the NDJSON format and order, tenant and user isolation, and an interrupted
export resumed with ``after`` (both databases)."""

from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from tests.conftest import Caller, create_conversation, new_caller
from tests.websocket.helpers import SERVICE


async def _export(client: httpx.AsyncClient, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    response = await client.get(url, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.content.endswith(b"\n") or response.content == b""
    return [orjson.loads(line) for line in response.content.splitlines()]


async def _history(client: httpx.AsyncClient, title: str, contents: list[str]) -> str:
    cid: str = (await create_conversation(client, title=title))["id"]
    for content in contents:
        response = await client.post(
            f"/api/v1/conversations/{cid}/messages", json={"content": content}
        )
        assert response.status_code == 201, response.text
    return cid


async def test_an_export_holds_every_record_of_the_caller_in_order(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    first = await _history(client, "First", ["one", "two"])
    reply = await client.post(
        f"/internal/v1/conversations/{first}/messages",
        json={"role": "assistant", "content": "three"},
        headers=SERVICE,
    )
    rid = reply.json()["id"]
    rated = await client.put(
        f"/api/v1/conversations/{first}/messages/{rid}/feedback",
        json={"rating": 1, "comment": "nice"},
    )
    assert rated.status_code == 200
    tracked = await client.patch(
        f"/internal/v1/conversations/{first}/tracked-context",
        json={"intent": "greet"},
        headers=SERVICE,
    )
    assert tracked.status_code == 200, tracked.text
    gone = await _history(client, "Deleted", ["never exported"])
    assert (await client.delete(f"/api/v1/conversations/{gone}")).status_code == 204
    second = await _history(client, "Second", ["four"])

    lines = await _export(client, "/api/v1/users/me/export")
    assert [line["type"] for line in lines] == [
        "conversation",
        "message",
        "message",
        "message",
        "session",
        "tracked_context",
        "feedback",
        "conversation",
        "message",
        "session",
    ]
    conversations = [line["data"] for line in lines if line["type"] == "conversation"]
    assert [c["id"] for c in conversations] == [first, second]  # oldest first
    assert conversations[0]["title"] == "First"
    messages = [line["data"] for line in lines if line["type"] == "message"]
    assert [(m["role"], m["content"], m["seq"]) for m in messages[:3]] == [
        ("user", "one", 1),
        ("user", "two", 2),
        ("assistant", "three", 3),
    ]
    assert messages[2]["feedback"] == {"rating": 1, "comment": "nice", "tags": []}
    assert lines[5]["data"]["data"]["intent"] == "greet"
    assert lines[6]["data"]["message_id"] == rid
    assert lines[6]["data"]["rating"] == 1
    # The API's own shape: a message line is what GET returns for it.
    got = (await client.get(f"/api/v1/conversations/{first}/messages/{rid}")).json()
    assert messages[2] == got

    internal = await _export(
        client, f"/internal/v1/tenants/{caller.tenant}/users/{caller.user}/export", headers=SERVICE
    )
    assert internal == lines


async def test_an_export_never_holds_another_users_or_tenants_data(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller
) -> None:
    await _history(client, "Mine", ["my words"])
    for other in (new_caller(tenant=caller.tenant), Caller(tenant="t-other", user=caller.user)):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=other.headers
        ) as them:
            await _history(them, "Theirs", ["their words"])
            lines = await _export(them, "/api/v1/users/me/export")
            assert [line["data"]["title"] for line in lines if line["type"] == "conversation"] == [
                "Theirs"
            ]
            assert "my words" not in str(lines)
    mine = await _export(client, "/api/v1/users/me/export")
    assert "their words" not in str(mine)
    assert (
        await client.get("/api/v1/users/me/export", headers={"Authorization": ""})
    ).status_code == 401
    url = f"/internal/v1/tenants/{caller.tenant}/users/{caller.user}/export"
    assert (await client.get(url)).status_code == 401  # a user token is no service key


async def test_an_interrupted_export_resumes_after_the_last_whole_conversation(
    client: httpx.AsyncClient,
) -> None:
    for n in range(4):
        await _history(client, f"c{n}", [f"m{n}-{i}" for i in range(3)])
    full = await _export(client, "/api/v1/users/me/export")
    # The download broke somewhere in the third conversation: keep what arrived whole.
    starts = [i for i, line in enumerate(full) if line["type"] == "conversation"]
    received = full[: starts[2] + 2]
    whole = received[: starts[2]]
    last_whole = [line for line in whole if line["type"] == "conversation"][-1]["data"]["id"]
    rest = await _export(client, "/api/v1/users/me/export", params={"after": last_whole})
    assert whole + rest == full
    assert (
        await _export(
            client, "/api/v1/users/me/export", params={"after": full[starts[3]]["data"]["id"]}
        )
        == []
    )
    bad = await client.get("/api/v1/users/me/export", params={"after": "not-an-id"})
    assert bad.status_code == 422


async def _import(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await client.post(
        "/api/v1/conversations/import",
        content=body,
        headers={"Content-Type": "application/x-ndjson"},
    )


def _histories(lines: list[dict[str, Any]]) -> list[tuple[str | None, list[tuple[str, str]]]]:
    out: list[tuple[str | None, list[tuple[str, str]]]] = []
    for line in lines:
        if line["type"] == "conversation":
            out.append((line["data"]["title"], []))
        elif line["type"] == "message":
            out[-1][1].append((line["data"]["role"], line["data"]["content"]))
    return out


async def test_an_export_imported_by_another_user_reproduces_the_histories_once(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller
) -> None:
    first = await _history(client, "Alpha", ["hello", "how are you"])
    await client.post(
        f"/internal/v1/conversations/{first}/messages",
        json={"role": "assistant", "content": "fine, thanks", "agent_id": "agent-9"},
        headers=SERVICE,
    )
    await _history(client, "Beta", ["second chat"])
    exported = await client.get("/api/v1/users/me/export")
    source = [orjson.loads(line) for line in exported.content.splitlines()]

    other = new_caller()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=other.headers
    ) as them:
        imported = await _import(them, exported.content)
        assert imported.status_code == 201, imported.text
        results = imported.json()["data"]
        sources = [line["data"]["id"] for line in source if line["type"] == "conversation"]
        assert [r["source_conversation_id"] for r in results] == sources
        assert all(r["created"] for r in results)
        assert {r["conversation_id"] for r in results}.isdisjoint(sources)  # new ids

        copy = await _export(them, "/api/v1/users/me/export")
        assert _histories(copy) == _histories(source)
        assert _histories(copy)[0][1][2] == ("assistant", "fine, thanks")
        assert [m["data"]["agent_id"] for m in copy if m["type"] == "message"][2] == "agent-9"
        new_first = copy[0]["data"]
        assert new_first["user_id"] == other.user
        assert new_first["metadata"]["imported_from"] == {"conversation_id": first}

        again = await _import(them, exported.content)
        assert again.status_code == 200, again.text
        assert [r["conversation_id"] for r in again.json()["data"]] == [
            r["conversation_id"] for r in results
        ]
        assert not any(r["created"] for r in again.json()["data"])
        assert await _export(them, "/api/v1/users/me/export") == copy  # nothing created


async def test_an_invalid_import_is_refused_whole(app: FastAPI, client: httpx.AsyncClient) -> None:
    await _history(client, "Gamma", ["text"])
    good = (await client.get("/api/v1/users/me/export")).content
    other = new_caller()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=other.headers
    ) as them:
        for body in (
            good + b'{"type": "message", "data": {"role": "robot", "content": "x"}}\n',
            good + b"not json\n",
            good + b'{"type": "unknown", "data": {}}\n',
            b'{"type": "message", "data": {"role": "user", "content": "orphan"}}\n',
            b"",
        ):
            refused = await _import(them, body)
            assert refused.status_code == 422, refused.text
        assert (await _export(them, "/api/v1/users/me/export")) == []
        as_json = await them.post(
            "/api/v1/conversations/import",
            content=good,
            headers={"Content-Type": "application/json"},
        )
        assert as_json.status_code == 415
        plain = await them.post(
            "/api/v1/conversations/import", content=good, headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415
        # "import" is no conversation id: other methods are 405, not the 422 of a bad id.
        other_method = await them.get("/api/v1/conversations/import")
        assert other_method.status_code == 405
        assert other_method.headers["allow"] == "POST"
