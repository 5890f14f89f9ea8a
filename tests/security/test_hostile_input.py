"""Hostile input gets a clean 4xx (never a 5xx, never a hang) and writes nothing; injection
strings are data, stored and returned verbatim, and match nothing but themselves.

Runs on SQLite and PostgreSQL: the backends differ exactly where this matters (PostgreSQL refuses
NUL in text and JSONB, SQLite does not), so the service must refuse it first on both.
"""

import uuid
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.db.tables import conversations_table, messages_table
from tests.conftest import Caller, create_conversation, new_caller
from tests.security.conftest import SERVICE, issue_api_key

INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE messages; --",
    'Robert"); DROP TABLE conversations;--',
    "1; SELECT pg_sleep(30)--",
    "' UNION SELECT id, tenant_id, user_id FROM conversations --",
    '{"$ne": null}',
    '{"$where": "sleep(1000)"}',
    "\\x00\\u0000",
    "%00%27%22",
    "../../../../etc/passwd",
    "${jndi:ldap://127.0.0.1/a}",
    "</script><script>alert(1)</script>",
    "\u202ereversed\u200b\ufeff 🙂",
]
JSON = {"Content-Type": "application/json"}


async def footprint(engine: AsyncEngine, tenant: str) -> tuple[int, int]:
    """How many conversations and messages the tenant has."""
    async with engine.connect() as conn:
        conversations = await conn.scalar(
            select(func.count()).where(conversations_table.c.tenant_id == tenant)
        )
        messages = await conn.scalar(
            select(func.count()).where(messages_table.c.tenant_id == tenant)
        )
    return int(conversations or 0), int(messages or 0)


def assert_clean_4xx(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["content-type"] in ("application/problem+json", "application/json")


async def test_injection_strings_are_stored_verbatim_and_match_only_themselves(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    bystander = new_caller()
    transport_headers = bystander.headers
    await client.post("/api/v1/conversations", json={"agent_id": "a"}, headers=transport_headers)
    before = await footprint(engine, bystander.tenant)
    for payload in INJECTIONS:
        created = await client.post(
            "/api/v1/conversations",
            json={"agent_id": payload, "title": payload, "metadata": {"k": payload, payload: 1}},
        )
        assert created.status_code == 201, (payload, created.text)
        body = created.json()
        assert (body["agent_id"], body["title"], body["metadata"]) == (
            payload,
            payload,
            {"k": payload, payload: 1},
        )
        cid = body["id"]
        posted = await client.post(
            f"/api/v1/conversations/{cid}/messages",
            json={"content": payload, "metadata": {"note": payload}},
            headers={"Idempotency-Key": payload[:40].encode("ascii", "ignore").decode() or "k"},
        )
        assert posted.status_code == 201, (payload, posted.text)
        page = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()
        assert [m["content"] for m in page["data"]] == [payload]
        for params in ({"agent_id": payload}, {"metadata.k": payload}):
            found = await client.get("/api/v1/conversations", params=params)
            assert found.status_code == 200, (payload, params, found.text)
            assert [c["id"] for c in found.json()["data"]] == [cid], (payload, params)
    # Filters that look like operators are compared as text, not interpreted.
    for params in (
        {"metadata.k": '{"$ne": null}'},
        {"agent_id": "' OR '1'='1' --"},
        {"tag": "x' OR 1=1 --"},
        {"status": "active"},
    ):
        listed = await client.get("/api/v1/conversations", params=params)
        assert listed.status_code == 200, params
        assert all(c["user_id"] == caller.user for c in listed.json()["data"])
    assert await footprint(engine, bystander.tenant) == before


async def test_nul_bytes_are_refused_wherever_they_come_in(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    before = await footprint(engine, caller.tenant)
    bodies: list[tuple[str, str, Any]] = [
        ("POST", "/api/v1/conversations", {"agent_id": "a\x00"}),
        ("POST", "/api/v1/conversations", {"agent_id": "a", "title": "t\x00"}),
        ("POST", "/api/v1/conversations", {"agent_id": "a", "tags": ["t\x00"]}),
        ("POST", "/api/v1/conversations", {"agent_id": "a", "metadata": {"k\x00": 1}}),
        ("POST", "/api/v1/conversations", {"agent_id": "a", "metadata": {"k": ["\x00"]}}),
        ("POST", f"/api/v1/conversations/{cid}/messages", {"content": "a\x00b"}),
        (
            "POST",
            f"/api/v1/conversations/{cid}/messages",
            {"content": "a", "metadata": {"x": "\x00"}},
        ),
        ("PATCH", f"/api/v1/conversations/{cid}", {"title": "\x00"}),
    ]
    for method, url, body in bodies:
        response = await client.request(method, url, json=body)
        assert_clean_4xx(response, 400, 422)
    escaped = await client.post(
        f"/api/v1/conversations/{cid}/messages", content=b'{"content": "a\\u0000b"}', headers=JSON
    )
    assert_clean_4xx(escaped, 400, 422)
    for url in (
        "/api/v1/conversations?agent_id=%00",
        "/api/v1/conversations?agent_id=a%00b",
        "/api/v1/conversations?tag=a%00",
        "/api/v1/conversations?metadata.k=%00",
        f"/api/v1/conversations/{cid}/messages?cursor=%00",
        "/api/v1/conversations/%00",
    ):
        assert_clean_4xx(await client.get(url), 400, 422)
    keyed = await client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "x"},
        headers={"Idempotency-Key": "a\x01b"},
    )
    assert_clean_4xx(keyed, 400, 422)
    internal = await client.post(
        f"/internal/v1/conversations/{cid}/messages",
        json={"role": "assistant", "content": "\x00"},
        headers=SERVICE,
    )
    assert_clean_4xx(internal, 422)
    erase = await client.delete(
        f"/internal/v1/tenants/{caller.tenant}%00/users/{caller.user}/data", headers=SERVICE
    )
    assert_clean_4xx(erase, 422)
    assert await footprint(engine, caller.tenant) == before


async def test_bodies_that_are_not_utf8_json_objects_are_4xx(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    before = await footprint(engine, caller.tenant)
    url = f"/api/v1/conversations/{cid}/messages"
    for raw in (
        b'{"content": "\xff\xfe"}',  # invalid UTF-8
        b'{"content": "\xc0\xaf"}',  # overlong encoding of "/"
        b'{"content": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"content": "abc',  # truncated
        b'{"content": "a"} {"content": "b"}',  # two documents
        b'{"content": ' + b"9" * 10_000 + b"}",  # a number too long to parse
        b"\x00" * 64,
    ):
        # 400 when the parser gives up, 422 when it decodes to text that is not acceptable
        # (e.g. the stdlib decodes an encoded surrogate, which validation then refuses).
        assert_clean_4xx(await client.post(url, content=raw, headers=JSON), 400, 422)
    for raw in (b"[]", b'"text"', b"null", b'{"content": "\\ud800"}'):
        assert_clean_4xx(await client.post(url, content=raw, headers=JSON), 422)
    assert await footprint(engine, caller.tenant) == before


async def test_ten_megabyte_bodies_are_413_before_anything_parses_them(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    key = {"Authorization": f"Bearer {await issue_api_key(client, caller)}"}
    before = await footprint(engine, caller.tenant)
    ten_mb = b'{"content": "' + b"x" * (10 * 1024 * 1024) + b'"}'

    async def streamed() -> Any:
        for start in range(0, len(ten_mb), 1 << 20):
            yield ten_mb[start : start + (1 << 20)]

    targets = [
        (f"/api/v1/conversations/{cid}/messages", {}),
        (f"/internal/v1/conversations/{cid}/messages", SERVICE),
        (f"/v1/conversations/conv_{uuid.UUID(cid).hex}/items", key),
    ]
    for url, headers in targets:
        declared = await client.post(url, content=ten_mb, headers={**JSON, **headers})
        assert declared.status_code == 413, url
        chunked = await client.post(url, content=streamed(), headers={**JSON, **headers})
        assert chunked.status_code == 413, url
    assert await footprint(engine, caller.tenant) == before


async def test_deeply_nested_json_is_refused(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    before = await footprint(engine, caller.tenant)
    arrays = b"[" * 300_000 + b"]" * 300_000
    objects = b'{"agent_id": "a", "metadata": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}"
    for raw in (arrays, objects):
        response = await client.post("/api/v1/conversations", content=raw, headers=JSON)
        assert_clean_4xx(response, 400, 422)
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(17):  # one level over the documented MAX_JSON_DEPTH
        nested = {"n": nested}
    for body in (
        {"agent_id": "a", "metadata": nested},
        {"agent_id": "a", "metadata": {"list": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}},
    ):
        assert_clean_4xx(await client.post("/api/v1/conversations", json=body), 422)
    assert await footprint(engine, caller.tenant) == before


async def test_page_sizes_and_positions_out_of_range_are_refused(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    key = {"Authorization": f"Bearer {await issue_api_key(client, caller)}"}
    lists = [
        f"/api/v1/conversations/{cid}/messages",
        "/api/v1/conversations",
        f"/api/v1/conversations/{cid}/sessions",
    ]
    for url in lists:
        for limit in ("0", "-1", "101", str(10**12), "1e309", "NaN", "ten"):
            assert_clean_4xx(await client.get(url, params={"limit": limit}), 422)
    messages = f"/api/v1/conversations/{cid}/messages"
    for params in (
        {"after_seq": "-1"},
        {"before_seq": "0"},
        {"before_seq": "-9223372036854775808"},
        {"after_seq": str(2**63)},
        {"after_seq": "1e3"},
        {"order": "sideways"},
    ):
        assert_clean_4xx(await client.get(messages, params=params), 422)
    history = f"/internal/v1/conversations/{cid}/tracked-context/history"
    for params in ({"limit": "100000"}, {"before_version": "-1"}):
        assert_clean_4xx(await client.get(history, params=params, headers=SERVICE), 422)
    items = f"/v1/conversations/conv_{uuid.UUID(cid).hex}/items"
    for params in ({"limit": "0"}, {"limit": "100000"}, {"limit": "-5"}):
        refused = await client.get(items, params=params, headers=key)
        assert refused.status_code == 400, params
        assert refused.json()["error"]["param"] == "limit"


async def test_forged_and_foreign_cursors_are_400_and_reveal_nothing(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    first = (await create_conversation(client))["id"]
    second = (await create_conversation(client))["id"]
    for cid in (first, second):
        for i in range(3):
            await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": f"m{i}"})
    page = (await client.get(f"/api/v1/conversations/{first}/messages?limit=1")).json()
    genuine = page["next_cursor"]
    conversations_cursor = (await client.get("/api/v1/conversations?limit=1")).json()["next_cursor"]
    assert genuine
    assert conversations_cursor
    head, _, tail = genuine.partition(".")
    flipped = genuine[:-2] + ("A" if genuine[-2] != "A" else "B") + genuine[-1]
    unsigned = orjson.dumps({"k": "msg", "c": first, "o": "asc", "s": 0}).hex()
    forged = [
        "-1",
        "0",
        "null",
        "AAAA",
        flipped,
        tail or head[::-1],
        unsigned,
        conversations_cursor,  # a cursor of another list
        "eyJrIjoibXNnIiwiYyI6IiIsIm8iOiJhc2MiLCJzIjotMX0",  # {"k":"msg",...,"s":-1}, unsigned
    ]
    for cursor in forged:
        response = await client.get(
            f"/api/v1/conversations/{first}/messages", params={"cursor": cursor}
        )
        assert_clean_4xx(response, 400)
        assert response.json()["type"].endswith("/invalid-cursor"), cursor
    # A genuine cursor of one conversation does not page another.
    other = await client.get(f"/api/v1/conversations/{second}/messages", params={"cursor": genuine})
    assert_clean_4xx(other, 400)
    too_long = await client.get(
        f"/api/v1/conversations/{first}/messages", params={"cursor": "A" * 600}
    )
    assert_clean_4xx(too_long, 422)
    # A genuine cursor is not a credential: another user still gets 404.
    intruder = await client.get(
        f"/api/v1/conversations/{first}/messages",
        params={"cursor": genuine},
        headers=new_caller(caller.tenant).headers,
    )
    assert intruder.status_code == 404
    for forgery in forged[:4]:
        sessions = await client.get(
            f"/api/v1/conversations/{first}/sessions", params={"cursor": forgery}
        )
        assert_clean_4xx(sessions, 400)
