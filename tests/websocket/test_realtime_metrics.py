"""``/metrics`` counts WebSocket and SSE viewers, published events, and the fan-out lag from an
event's publication to its write on a live socket."""

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Caller, create_conversation
from tests.routes.test_events_sse import sse
from tests.websocket.helpers import post_deltas, serve, start_reply, ws_client


@pytest.fixture(scope="module")
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    """Every sample of ``/metrics`` by name and labels."""
    text = (await client.get("/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def connections(samples: Samples, transport: str) -> float:
    return samples[("conversation_realtime_connections", (("transport", transport),))]


async def test_viewers_events_and_fan_out_lag_are_measured(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    before = await scrape(client)
    lag_count = ("conversation_event_fanout_lag_seconds_count", ())
    deltas = ("conversation_events_published_total", (("type", "message.delta"),))
    async with ws_client(base_url, caller.token) as ws, sse(base_url, cid, caller) as stream:
        await ws.subscribe(cid)
        await stream.next()  # subscribed
        during = await scrape(client)
        assert connections(during, "websocket") == connections(before, "websocket") + 1
        assert connections(during, "sse") == connections(before, "sse") + 1
        message = await start_reply(client, cid)
        await post_deltas(client, cid, message["id"], [(0, "a"), (1, "b")])
        await ws.recv_until(lambda f: f["type"] == "message.delta" and f["data"]["index"] == 1)
        await stream.until("message.delta")
        await stream.until("message.delta")
        # Each writer records the lag once it has written a batch: after the client saw it.
        after = await eventually(
            client, lambda s: s[lag_count] - before.get(lag_count, 0) >= 2, "lag observations"
        )
    assert after[deltas] - before.get(deltas, 0) == 2
    await eventually(
        client,
        lambda s: (
            connections(s, "websocket") == connections(before, "websocket")
            and connections(s, "sse") == connections(before, "sse")
        ),
        "the viewers to be counted out",
    )


async def eventually(
    client: httpx.AsyncClient, check: Callable[[Samples], bool], what: str
) -> Samples:
    """Scrape until ``check`` holds (a guard against a hang, not a speed requirement)."""
    for _ in range(500):
        samples = await scrape(client)
        if check(samples):
            return samples
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
