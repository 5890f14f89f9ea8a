"""Search over history: the query language, stemming, filters, paging, snippets, isolation, and
an index that stays in step with deletes, edits and erasure (both databases)."""

import uuid
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import RowMapping, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.db.tables import feedback_table
from conversation_service.services import search as search_service
from conversation_service.services.auth import Principal
from conversation_service.services.job_context import JobContext
from conversation_service.services.processing import process_message
from conversation_service.services.search import SearchFilters
from conversation_service.services.unit_of_work import UnitOfWork
from tests.conftest import Caller, create_conversation, new_caller
from tests.websocket.helpers import SERVICE, complete, post_deltas, start_reply


async def _say(client: httpx.AsyncClient, cid: str, content: str) -> dict[str, Any]:
    response = await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": content})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def _search(client: httpx.AsyncClient, q: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _found(client: httpx.AsyncClient, q: str, **params: Any) -> list[str]:
    return [hit["message_id"] for hit in (await _search(client, q, **params))["data"]]


async def _process(app: FastAPI, engine: AsyncEngine, message_id: str) -> None:
    """Run the processing job's core (language detection) for one message, as a worker would."""
    resources = app.state.resources
    ctx = JobContext(
        job=cast(RowMapping, {"message_id": uuid.UUID(message_id)}),
        settings=resources.settings,
        engine=engine,
        redis=cast(Redis, resources.redis),
    )
    await process_message(ctx)


def _as(app: FastAPI, caller: Caller) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=caller.headers
    )


async def test_words_phrases_prefixes_and_exclusions_find_what_they_say(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client, title="Travel plans"))["id"]
    flight = await _say(client, cid, "Book a cheap flight to Lisbon on Friday")
    hotel = await _say(client, cid, "Find a hotel near the station in Lisbon")
    other = await _say(client, cid, "The weather in Oslo is cold")

    assert set(await _found(client, "lisbon")) == {flight["id"], hotel["id"]}
    assert await _found(client, "LISBON hotel") == [hotel["id"]]  # every word must match
    assert await _found(client, '"cheap flight"') == [flight["id"]]
    assert await _found(client, '"flight cheap"') == []  # a phrase keeps its order
    assert await _found(client, "lisbon -hotel") == [flight["id"]]
    assert await _found(client, "stat*") == [hotel["id"]]
    assert await _found(client, "osl*") == [other["id"]]
    assert await _found(client, "-lisbon") == []  # nothing left to look for

    page = await _search(client, '"cheap flight"')
    assert page["has_more"] is False
    assert page["next_cursor"] is None
    [hit] = page["data"]
    assert hit["conversation_id"] == cid
    assert hit["conversation_title"] == "Travel plans"
    assert (hit["seq"], hit["role"]) == (1, "user")
    assert hit["created_at"] == flight["created_at"]
    assert isinstance(hit["score"], float)
    assert hit["score"] > 0
    text = hit["snippet"]["text"]
    assert text == "Book a cheap flight to Lisbon on Friday"
    assert [text[s:e] for s, e in hit["snippet"]["highlights"]] == ["cheap flight"]


async def test_stemming_uses_each_messages_detected_language(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    spanish = await _say(client, cid, "Me gusta correr por el parque todas las mañanas")
    english = await _say(client, cid, "I run along the river every single morning")
    unknown = await _say(client, cid, "zzz")
    for message in (spanish, english, unknown):
        await _process(app, engine, message["id"])

    assert await _found(client, "corriendo") == [spanish["id"]]
    assert await _found(client, "running") == [english["id"]]
    assert await _found(client, "MAÑANA") == [spanish["id"]]
    assert await _found(client, "manana") == [spanish["id"]]  # accents fold both ways
    assert await _found(client, "zzz") == [unknown["id"]]  # the neutral fallback
    hit = (await _search(client, "corriendo"))["data"][0]
    text = hit["snippet"]["text"]
    assert [text[s:e] for s, e in hit["snippet"]["highlights"]] == ["correr"]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "\t\n"},
        {"q": "x", "limit": 0},
        {"q": "x", "limit": 51},
        {"q": "x", "limit": "many"},
        {"q": "x", "role": "robot"},
        {"q": "x", "created_after": "yesterday"},
        {"q": "x", "conversation_id": "not-a-uuid"},
        {"q": "x" * 1001},
    ],
)
async def test_a_blank_query_or_a_bad_parameter_is_422(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    response = await client.get("/api/v1/search", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


HOSTILE = [
    '"',
    '"unclosed phrase',
    "*",
    "-",
    "--",
    "-*",
    "a*",
    "NEAR(lisbon hotel)",
    "lisbon AND OR NOT",
    "search_stems:lisbon",
    "{search_words}:x",
    "^lisbon",
    "lisbon:*",
    "'; DROP TABLE messages; --",
    "!(a|b) & c <-> d",
    "\x00lisbon",
    "😀 💥",
    "\\",
    "%_%",
    "(((((",
    "lisbon" * 166,
    "lisbon* " * 124,
]


async def test_hostile_queries_never_error(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    lisbon = await _say(client, cid, "Lisbon hotel")
    for q in HOSTILE:
        response = await client.get("/api/v1/search", params={"q": q})
        assert response.status_code == 200, (q, response.text)
        assert response.json()["has_more"] is False
    # Engine syntax is only ever words: the operators are searched for, not obeyed.
    assert await _found(client, "NEAR(lisbon hotel)") == []
    assert await _found(client, "search_stems:lisbon") == []
    assert await _found(client, "\x00lisbon") == [lisbon["id"]]


async def test_other_users_and_tenants_are_never_found(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    mine = await _say(client, cid, "quarterly budget spreadsheet")
    neighbour = new_caller(tenant=caller.tenant)  # same tenant, another user
    stranger = Caller(tenant=f"t-{uuid.uuid4().hex[:12]}", user=caller.user)  # same user id
    for other in (neighbour, stranger):
        async with _as(app, other) as them:
            theirs = (await create_conversation(them))["id"]
            await _say(them, theirs, "quarterly budget spreadsheet")
            assert len(await _found(them, "budget")) == 1
            assert mine["id"] not in await _found(them, "budget")
            # Naming my conversation does not reach it either.
            assert await _found(them, "budget", conversation_id=cid) == []
    assert await _found(client, "budget") == [mine["id"]]

    internal = await client.get(
        "/internal/v1/search",
        params={"tenant": caller.tenant, "user": caller.user, "q": "budget"},
        headers=SERVICE,
    )
    assert internal.status_code == 200, internal.text
    assert [h["message_id"] for h in internal.json()["data"]] == [mine["id"]]
    as_user = await client.get(
        "/internal/v1/search", params={"tenant": caller.tenant, "user": caller.user, "q": "x"}
    )
    assert as_user.status_code == 401
    blank = await client.get(
        "/internal/v1/search",
        params={"tenant": caller.tenant, "user": caller.user, "q": " "},
        headers=SERVICE,
    )
    assert blank.status_code == 422


async def test_filters_and_pages_narrow_and_continue_a_search(client: httpx.AsyncClient) -> None:
    first = (await create_conversation(client, agent_id="agent-1"))["id"]
    second = (await create_conversation(client, agent_id="agent-2"))["id"]
    ids = [(await _say(client, first, f"invoice number {i}"))["id"] for i in range(5)]
    reply = await client.post(
        f"/internal/v1/conversations/{first}/messages",
        json={"role": "assistant", "content": "Here is your invoice"},
        headers=SERVICE,
    )
    assert reply.status_code == 201, reply.text
    elsewhere = await _say(client, second, "invoice for the other agent")

    assert set(await _found(client, "invoice", role="assistant")) == {reply.json()["id"]}
    assert await _found(client, "invoice", agent_id="agent-2") == [elsewhere["id"]]
    assert await _found(client, "invoice", conversation_id=second) == [elsewhere["id"]]
    cutoff = (await client.get(f"/api/v1/conversations/{first}/messages/{ids[2]}")).json()
    after = await _found(
        client, "invoice", conversation_id=first, role="user", created_after=cutoff["created_at"]
    )
    assert set(after) == set(ids[3:])

    # Equal scores: newest first, page after page, each hit once.
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"role": "user", "conversation_id": first, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await _search(client, "number", **params)
        seen += [hit["message_id"] for hit in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == ids[::-1]
    # A cursor continues its own search only.
    first_page = await _search(client, "number", limit=2)
    other = await client.get(
        "/api/v1/search", params={"q": "invoice", "limit": 2, "cursor": first_page["next_cursor"]}
    )
    assert other.status_code == 400
    forged = await client.get("/api/v1/search", params={"q": "number", "cursor": "abc.def"})
    assert forged.status_code == 400

    archived = await client.patch(f"/api/v1/conversations/{second}", json={"status": "archived"})
    assert archived.status_code == 200, archived.text
    assert await _found(client, "invoice", agent_id="agent-2") == []
    assert await _found(client, "invoice", agent_id="agent-2", include_archived="true") == [
        elsewhere["id"]
    ]


async def test_a_title_match_finds_the_conversations_first_message(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client, title="Weekend in Granada"))["id"]
    opening = await _say(client, cid, "hello there")
    await _say(client, cid, "what should we visit")
    [hit] = (await _search(client, "granada"))["data"]
    assert (hit["message_id"], hit["conversation_title"]) == (opening["id"], "Weekend in Granada")
    text = hit["snippet"]["text"]
    assert [text[s:e] for s, e in hit["snippet"]["highlights"]] == ["Granada"]
    renamed = await client.patch(f"/api/v1/conversations/{cid}", json={"title": "Sevilla"})
    assert renamed.status_code == 200
    assert await _found(client, "granada") == []
    assert await _found(client, "sevilla") == [opening["id"]]


async def test_deleted_edited_and_erased_messages_leave_the_index_in_step(
    client: httpx.AsyncClient, caller: Caller, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    gone = await _say(client, cid, "secret pineapple recipe")
    deleted = await client.delete(f"/api/v1/conversations/{cid}/messages/{gone['id']}")
    assert deleted.status_code == 204
    assert await _found(client, "pineapple") == []

    reply = await start_reply(client, cid)
    await post_deltas(client, cid, reply["id"], [(0, "draft about mangoes")])
    await complete(client, cid, reply["id"], content="Final words about papayas")
    assert await _found(client, "papayas") == [reply["id"]]
    assert await _found(client, "mangoes") == []

    other = (await create_conversation(client))["id"]
    await _say(client, other, "papayas again")
    assert (await client.delete(f"/api/v1/conversations/{other}")).status_code == 204
    assert await _found(client, "papayas") == [reply["id"]]

    rated = await client.put(
        f"/api/v1/conversations/{cid}/messages/{reply['id']}/feedback", json={"rating": 1}
    )
    assert rated.status_code == 200
    erased = await client.delete("/api/v1/users/me/data")
    assert erased.status_code == 200, erased.text
    assert await _found(client, "papayas") == []
    async with engine.connect() as conn:
        # Erased, not merely hidden: no index entry and no feedback row is left.
        if engine.dialect.name == "sqlite":
            for fts, word in (("messages_fts", "papayas"), ("conversations_fts", "papayas")):
                left = await conn.execute(
                    text(f"SELECT count(*) FROM {fts} WHERE {fts} MATCH :q"),  # noqa: S608
                    {"q": f'search_words : "{word}"'},
                )
                assert left.scalar_one() == 0
        feedback_left = await conn.execute(
            select(func.count()).where(feedback_table.c.tenant_id == caller.tenant)
        )
        assert feedback_left.scalar_one() == 0
    internal = await client.get(
        "/internal/v1/search",
        params={"tenant": caller.tenant, "user": caller.user, "q": "papayas"},
        headers=SERVICE,
    )
    assert internal.json()["data"] == []


async def test_only_the_newest_matches_of_the_callers_history_are_ranked(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window is the service's own bound (1,000 in production); 3 keeps the test small.
    monkeypatch.setattr(search_service, "RANK_WINDOW", 3)
    cid = (await create_conversation(client))["id"]
    # The oldest match scores best (the word three times) but is outside the newest three.
    best = await _say(client, cid, "lisbon lisbon lisbon")
    newest = [(await _say(client, cid, f"lisbon trip {i}"))["id"] for i in range(3)]
    neighbour = new_caller(tenant=caller.tenant)
    async with _as(app, neighbour) as them:
        theirs = (await create_conversation(them))["id"]
        for _ in range(4):  # newer matches of another user do not take the window
            await _say(them, theirs, "lisbon")
    weather = (await _say(client, cid, "lisbon weather"))["id"]

    assert set(await _found(client, "lisbon")) == {newest[1], newest[2], weather}
    assert best["id"] not in await _found(client, "lisbon", limit=50)
    # The window holds the newest matches of the query, not of each word: all three trips.
    assert set(await _found(client, "lisbon trip")) == set(newest)
    assert await _found(client, "weather") == [weather]


# How PostgreSQL may find the newest matches: every match (from an index bitmap: the GIN index
# when the words are rare), sorted; or the tenant's messages newest first, stopping at the
# window (common words). The planner picks by the words' statistics; each setting here leaves it
# one way, and the test reads the plan to be sure it took that way.
_PLANS = {
    "Bitmap Heap Scan on messages": ("enable_indexscan", "enable_seqscan"),
    "Index Scan Backward using ix_messages_tenant_created": (
        "enable_bitmapscan",
        "enable_seqscan",
        "enable_sort",
    ),
}


async def test_both_ways_postgresql_finds_the_newest_matches_give_the_same_hits(
    client: httpx.AsyncClient,
    caller: Caller,
    engine: AsyncEngine,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the stored search vector and its plans are PostgreSQL's")
    monkeypatch.setattr(search_service, "RANK_WINDOW", 3)
    cid = (await create_conversation(client))["id"]
    await _say(client, cid, "porto porto porto")  # best score, but not among the newest three
    newest = [(await _say(client, cid, f"porto wine {i}"))["id"] for i in range(3)]
    gone = (await _say(client, cid, "porto wine tasting"))["id"]
    assert (await client.delete(f"/api/v1/conversations/{cid}/messages/{gone}")).status_code == 204
    neighbour = new_caller(tenant=caller.tenant)
    async with _as(app, neighbour) as them:
        theirs = (await create_conversation(them))["id"]
        await _say(them, theirs, "porto wine")  # the tenant's newest match is not the caller's
    principal = Principal(tenant_id=caller.tenant, user_id=caller.user)
    statements: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        statements.append((args[2], args[3]))  # statement, parameters

    found: dict[str, list[str]] = {}
    for way, settings in _PLANS.items():
        statements.clear()
        async with engine.connect() as conn:
            for setting in settings:
                await conn.exec_driver_sql(f"SET {setting} = off")
            event.listen(conn.sync_connection, "before_cursor_execute", capture)
            page = await search_service.search(
                UnitOfWork(conn), principal, "porto wine", SearchFilters(), limit=10,
                cursor=None, codec=app.state.resources.cursors,
            )  # fmt: skip
            event.remove(conn.sync_connection, "before_cursor_execute", capture)
            [(statement, parameters)] = [s for s in statements if "ts_rank" in s[0]]
            plan = await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            shown = "\n".join(row[0] for row in plan)
            assert way in shown, shown
        found[way] = [str(hit["message_id"]) for hit in page["data"]]

    [every_match, newest_first] = found.values()
    assert set(newest_first) == set(newest)
    assert newest_first == every_match


async def test_the_public_and_internal_search_answer_the_same_pages(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    """One use case behind both transports: same hits, snippets, scores and cursor paging."""
    cid = (await create_conversation(client, title="Porto trip"))["id"]
    for text_ in ("porto wine cellars", "a cheap flight to porto", "porto in the rain", "oslo"):
        await _say(client, cid, text_)
    params = {"q": "porto", "limit": 2, "role": "user"}
    internal_params = {"tenant": caller.tenant, "user": caller.user, **params}
    public = await _search(client, **params)
    internal = await client.get("/internal/v1/search", params=internal_params, headers=SERVICE)
    assert internal.status_code == 200, internal.text
    assert internal.json()["data"] == public["data"]
    assert public["has_more"] is internal.json()["has_more"] is True
    rest = await _search(client, **params, cursor=public["next_cursor"])
    internal_rest = await client.get(
        "/internal/v1/search",
        params={**internal_params, "cursor": internal.json()["next_cursor"]},
        headers=SERVICE,
    )
    assert internal_rest.json()["data"] == rest["data"]
