"""Tracked context: merge patches, If-Match optimistic concurrency, history of versions."""

import re
import uuid
from typing import Any

import httpx

from tests.conftest import INTERNAL_KEY, create_conversation

SERVICE = {"Authorization": f"Bearer {INTERNAL_KEY}"}


async def test_patch_versions_and_history(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    url = f"/internal/v1/conversations/{cid}/tracked-context"
    empty = await client.get(url, headers=SERVICE)
    assert empty.json()["version"] == 0
    assert empty.headers["etag"] == '"0"'
    first = await client.patch(
        url,
        json={"intent": "book_flight", "entities": {"city": "Madrid"}, "topics": ["travel"]},
        headers={**SERVICE, "X-Changed-By": "agent-7", "If-Match": '"0"'},
    )
    assert first.status_code == 200, first.text
    assert first.headers["etag"] == '"1"'
    second = await client.patch(
        url,
        json={"entities": {"date": "2026-12-01"}, "workflow_step": "confirm"},
        headers={**SERVICE, "If-Match": '"1"'},
    )
    assert second.json()["data"] == {
        "intent": "book_flight",
        "entities": {"city": "Madrid", "date": "2026-12-01"},
        "topics": ["travel"],
        "workflow_step": "confirm",
    }
    history = (await client.get(url + "/history", headers=SERVICE)).json()
    assert [v["version"] for v in history["data"]] == [2, 1]
    assert history["data"][1]["changed_by"] == "agent-7"
    assert history["data"][1]["patch"] == {
        "intent": "book_flight",
        "entities": {"city": "Madrid"},
        "topics": ["travel"],
    }
    assert history["data"][0]["changed_by"] == "orchestrator"


async def test_stale_if_match_is_412_and_changes_nothing(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    url = f"/internal/v1/conversations/{cid}/tracked-context"
    await client.patch(url, json={"intent": "a"}, headers=SERVICE)
    await client.patch(url, json={"intent": "b"}, headers=SERVICE)
    stale = await client.patch(url, json={"intent": "c"}, headers={**SERVICE, "If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.json()["type"].endswith("/precondition-failed")
    current = (await client.get(url, headers=SERVICE)).json()
    assert current["version"] == 2
    assert current["data"] == {"intent": "b"}
    history = (await client.get(url + "/history", headers=SERVICE)).json()
    assert len(history["data"]) == 2


async def test_invalid_documents_and_headers_are_refused(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    url = f"/internal/v1/conversations/{cid}/tracked-context"
    assert (await client.patch(url, json={"colour": "red"}, headers=SERVICE)).status_code == 422
    assert (await client.patch(url, json={"topics": "x"}, headers=SERVICE)).status_code == 422
    bad_match = await client.patch(url, json={"intent": "a"}, headers={**SERVICE, "If-Match": "x"})
    assert bad_match.status_code == 422
    assert (await client.get(url, headers=SERVICE)).json()["version"] == 0
    missing = f"/internal/v1/conversations/{uuid.uuid4()}/tracked-context"
    assert (await client.patch(missing, json={"intent": "a"}, headers=SERVICE)).status_code == 404
    assert (await client.get(url)).status_code == 401  # user token on an internal route


def schema_pattern(schema: dict[str, Any]) -> str | None:
    """The ``pattern`` of a string schema, also inside ``anyOf`` (an optional header)."""
    if "pattern" in schema:
        return str(schema["pattern"])
    patterns = [schema_pattern(option) for option in schema.get("anyOf", [])]
    return next((found for found in patterns if found), None)


async def test_the_if_match_format_is_documented_and_anything_else_is_refused(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    patch = spec["paths"]["/internal/v1/conversations/{conversation_id}/tracked-context"]["patch"]
    (header,) = [p for p in patch["parameters"] if p["name"].lower() == "if-match"]
    pattern = schema_pattern(header["schema"])
    assert pattern is not None, header
    cid = (await create_conversation(client))["id"]
    url = f"/internal/v1/conversations/{cid}/tracked-context"
    # Every form the document allows works (``*``: whatever the current version is).
    for version, if_match in enumerate(['"0"', "1", 'W/"2"', "*"]):
        assert re.search(pattern, if_match), if_match
        done = await client.patch(
            url, json={"intent": f"i{version}"}, headers={**SERVICE, "If-Match": if_match}
        )
        assert done.status_code == 200, (if_match, done.text)
        assert done.json()["version"] == version + 1
    # Anything else is refused as a malformed header, never a 500, and changes nothing.
    for bad in [b"x", b'"4", "5"', b"\xb2", b"4" * 5000, b'"-1"']:
        assert not re.search(pattern, bad.decode("latin-1")), bad
        refused = await client.patch(
            url, json={"intent": "no"}, headers={**SERVICE, "If-Match": bad}
        )
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
    assert (await client.get(url, headers=SERVICE)).json()["version"] == 4
