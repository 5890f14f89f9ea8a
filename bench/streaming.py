"""Streaming scenarios: agent delta → WebSocket viewers, against raw floors of the same run.

* ``stream``: an orchestrator posts deltas (``POST …/deltas``, one delta per request) to a
  streaming message while 1, 10 and 100 WebSocket viewers are subscribed; each delta's latency is
  taken from just before its POST to its arrival at each viewer (paced: the next delta is posted
  once every viewer has the previous one). The floor is Redis pub/sub (publish → a redis-py
  subscriber with hiredis, in this process) plus a bare ``websockets`` server's fan-out to the
  same number of clients (``bench.ws_floor``, ``broadcast()``), measured the same way, in the
  same run. Then a flood: 10 viewers, 8 concurrent posters, deliveries per second (a delivery is
  one delta arriving at one viewer), with one delta per request and with 20 per request, next to
  the bare server's flood rate.
* ``stream-memory``: RSS per idle WebSocket (connected and subscribed) with 1,000 connections,
  service against the bare ``websockets`` server.

Clients turn permessage-deflate off on both sides of every comparison: it would measure zlib.
"""

import asyncio
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from bench.api import BenchError
from bench.client import PreparedRequest, RawConnection, prepare
from bench.harness import BenchContext
from bench.report import Result, Target
from bench.server import free_port
from bench.stats import percentile
from bench.ws_floor import PIPE_CHANNEL

VIEWERS = (1, 10, 100)
FLOOD_VIEWERS = 10
FLOOD_POSTERS = 8
BATCH = 20
IDLE_CONNECTIONS = 1_000
TIMEOUT = 30.0
DELTA_TEXT = "token "

Send = Callable[[int], Awaitable[None]]


def _index_of(frame: str | bytes) -> int | None:
    """The delta index of a service frame (cheap: no JSON parse), or the key of a floor frame."""
    text = frame.decode() if isinstance(frame, bytes) else frame
    if text.isdigit():
        return int(text)
    if '"type":"message.delta"' not in text:
        return None
    start = text.index('"index":') + 8
    end = text.index(",", start)
    return int(text[start:end])


class Viewers:
    """Connected receivers that timestamp every keyed frame."""

    def __init__(self) -> None:
        self.connections: list[ClientConnection] = []
        self.arrivals: defaultdict[int, list[float]] = defaultdict(list)
        self.expected = 0
        self.count = 0
        self.done = asyncio.Event()
        self.waiting: dict[int, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.record = True

    def start(self) -> None:
        for connection in self.connections:
            self._tasks.append(asyncio.create_task(self._read(connection)))

    async def _read(self, connection: ClientConnection) -> None:
        clock = time.perf_counter
        async for frame in connection:
            key = _index_of(frame)
            if key is None:
                continue
            now = clock()
            self.count += 1
            if self.record:
                arrivals = self.arrivals[key]
                arrivals.append(now)
                if len(arrivals) == len(self.connections) and key in self.waiting:
                    self.waiting.pop(key).set()
            if self.count >= self.expected > 0:
                self.done.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)


async def _paced(send: Send, viewers: Viewers, count: int, warmup: int) -> list[float]:
    latencies: list[float] = []
    for key in range(warmup + count):
        event = viewers.waiting[key] = asyncio.Event()
        started = time.perf_counter()
        await send(key)
        async with asyncio.timeout(TIMEOUT):
            await event.wait()
        if key >= warmup:
            latencies.extend(t - started for t in viewers.arrivals.pop(key))
        else:
            viewers.arrivals.pop(key, None)
    latencies.sort()
    return latencies


async def _flood(send: Send, viewers: Viewers, requests: int, per_request: int) -> float:
    total = requests * per_request * len(viewers.connections)
    viewers.record = False
    viewers.count = 0
    viewers.expected = total
    viewers.done.clear()
    keys = iter(range(requests))

    async def poster() -> None:
        for key in keys:
            await send(key)

    started = time.perf_counter()
    await asyncio.gather(*(poster() for _ in range(FLOOD_POSTERS)))
    async with asyncio.timeout(TIMEOUT * 4):
        await viewers.done.wait()
    elapsed = time.perf_counter() - started
    viewers.record = True
    viewers.expected = 0
    return total / elapsed


def _ms(values: list[float], fraction: float) -> float:
    return percentile(values, fraction) * 1e3


class Service:
    """The service under test, seen by the orchestrator and by viewers."""

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx
        self.host = f"{ctx.service.host}:{ctx.service.port}"
        self.key = ctx.service.config.internal_key
        self.http = httpx.AsyncClient(
            base_url=ctx.service.base_url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30.0,
        )
        self.posters: list[RawConnection] = []
        self.conversation = uuid.UUID(int=0)
        self.message = ""

    async def open(self) -> None:
        self.conversation = await self.ctx.api.create_conversation()
        await self.new_message()
        self.posters = [
            await RawConnection.open(self.ctx.service.host, self.ctx.service.port)
            for _ in range(FLOOD_POSTERS)
        ]

    async def new_message(self) -> None:
        """A fresh streaming message (delta indexes start again at 0)."""
        response = await self.http.post(
            f"/internal/v1/conversations/{self.conversation}/messages",
            json={"role": "assistant", "status": "streaming"},
        )
        if response.status_code != 201:
            raise BenchError(f"streaming message: {response.status_code} {response.text}")
        self.message = response.json()["id"]

    async def close(self) -> None:
        await self.http.aclose()
        for poster in self.posters:
            await poster.aclose()

    def _request(self, first: int, count: int) -> PreparedRequest:
        path = f"/internal/v1/conversations/{self.conversation}/messages/{self.message}/deltas"
        deltas = [{"index": i, "text": DELTA_TEXT} for i in range(first, first + count)]
        return prepare("POST", path, host=self.host, token=self.key, json_body={"deltas": deltas})

    def sender(self, per_request: int = 1) -> Send:
        free = list(self.posters)

        async def send(key: int) -> None:
            poster = free.pop()
            try:
                status, body = await poster.send(self._request(key * per_request, per_request))
            finally:
                free.append(poster)
            if status != 202:
                raise BenchError(f"deltas: {status} {body[:200]!r}")

        return send

    async def agent_sender(self, stack: AsyncExitStack) -> Send:
        """Deltas over the agents' WebSocket (one frame per delta; acks drained aside)."""
        url = f"ws://{self.host}/internal/v1/ws/stream"
        agent = await connect(
            url, compression=None, additional_headers={"Authorization": f"Bearer {self.key}"}
        )

        async def drain() -> None:
            async for _ in agent:
                pass

        reader = asyncio.create_task(drain())

        async def close() -> None:
            await agent.close()
            await asyncio.gather(reader, return_exceptions=True)

        stack.push_async_callback(close)
        head = (
            '{"type":"delta","conversation_id":"' + str(self.conversation)
            + '","message_id":"' + self.message + '","deltas":[{"index":'
        )  # fmt: skip

        async def send(key: int) -> None:
            await agent.send(head + str(key) + ',"text":"' + DELTA_TEXT + '"}]}')

        return send

    async def viewers(self, count: int) -> Viewers:
        viewers = Viewers()
        url = f"ws://{self.host}/api/v1/ws?token={self.ctx.token}"
        subscribe = (
            '{"type":"subscribe","conversation_id":"' + str(self.conversation) + '","after":null}'
        )
        for _ in range(count):
            connection = await connect(url, compression=None, max_queue=None, open_timeout=30)
            await connection.send(subscribe)
            while '"subscribed"' not in str(await connection.recv()):
                pass
            viewers.connections.append(connection)
        viewers.start()
        return viewers


class Floor:
    """The raw floors: Redis pub/sub in this process and the bare websockets server."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.ws_floor",
            str(self.port),
            self.redis_url,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            line = await self.process.stdout.readline()
        if line.strip() != b"ready":
            raise BenchError("the bare websockets server did not start")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def viewers(self, count: int) -> tuple[Viewers, ClientConnection]:
        url = f"ws://127.0.0.1:{self.port}/"
        driver = await connect(url, compression=None, max_queue=None)
        viewers = Viewers()
        viewers.connections = [
            await connect(url, compression=None, max_queue=None, open_timeout=30)
            for _ in range(count)
        ]
        viewers.start()
        await asyncio.sleep(0.05)
        return viewers, driver

    async def pipeline_sender(self, stack: AsyncExitStack) -> Send:
        """Publish to the bare server's Redis channel (it fans out what it receives)."""
        publisher = Redis.from_url(self.redis_url)
        stack.push_async_callback(publisher.aclose)

        async def send(key: int) -> None:
            await publisher.publish(PIPE_CHANNEL, str(key))

        return send

    async def pubsub_latency(self, count: int, warmup: int) -> list[float]:
        publisher = Redis.from_url(self.redis_url)
        subscriber = Redis.from_url(self.redis_url)
        channel = f"bench:floor:{uuid.uuid4().hex}"
        pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)
        latencies: list[float] = []
        try:
            for key in range(warmup + count):
                started = time.perf_counter()
                await publisher.publish(channel, str(key))
                async with asyncio.timeout(TIMEOUT):
                    while True:
                        message = await pubsub.get_message(timeout=None)
                        if message is not None and message["type"] == "message":
                            break
                if key >= warmup:
                    latencies.append(time.perf_counter() - started)
        finally:
            await pubsub.aclose()
            await publisher.aclose()
            await subscriber.aclose()
        latencies.sort()
        return latencies


def _rss_kib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    raise BenchError("no VmRSS")


def _quick(ctx: BenchContext) -> bool:
    return ctx.counts.warmup < 100


async def stream(ctx: BenchContext) -> list[Result]:
    """Delta POST → viewer latency with 1/10/100 viewers and the 10-viewer delivery rate."""
    quick = _quick(ctx)
    paced_count = 200 if quick else 1_000
    warmup = 20 if quick else 100
    flood_requests = 500 if quick else 3_000
    redis_url = ctx.service.config.redis_url
    service, floor = Service(ctx), Floor(redis_url)
    runs: defaultdict[str, list[float]] = defaultdict(list)
    latencies: defaultdict[str, list[list[float]]] = defaultdict(list)
    cpu_per_delta: defaultdict[str, list[float]] = defaultdict(list)

    async with AsyncExitStack() as stack:
        await service.open()
        stack.push_async_callback(service.close)
        await floor.start()
        stack.push_async_callback(floor.stop)
        for _ in range(ctx.counts.repeats):
            latencies["redis"].append(await floor.pubsub_latency(paced_count, warmup))
            for n in VIEWERS:
                bare, driver = await floor.viewers(n)

                async def broadcast(key: int, driver: ClientConnection = driver) -> None:
                    await driver.send(str(key))

                latencies[f"ws {n}"].append(await _paced(broadcast, bare, paced_count, warmup))
                async with AsyncExitStack() as pipe:
                    publish = await floor.pipeline_sender(pipe)
                    latencies[f"pipe {n}"].append(await _paced(publish, bare, paced_count, warmup))
                if n == FLOOD_VIEWERS:
                    runs["ws flood"].append(await _flood(broadcast, bare, flood_requests, 1))
                await bare.close()
                await driver.close()

                viewers = await service.viewers(n)
                await service.new_message()
                latencies[f"svc {n}"].append(
                    await _paced(service.sender(), viewers, paced_count, warmup)
                )
                if n == FLOOD_VIEWERS:
                    await service.new_message()
                    cpu = ctx.service.cpu_seconds()
                    runs["svc flood 1"].append(
                        await _flood(service.sender(), viewers, flood_requests, 1)
                    )
                    # The service's CPU per delta posted (docs/SCALING.md sizes with it).
                    cpu_per_delta["1"].append((ctx.service.cpu_seconds() - cpu) / flood_requests)
                    await service.new_message()
                    cpu = ctx.service.cpu_seconds()
                    runs["svc flood batch"].append(
                        await _flood(service.sender(BATCH), viewers, flood_requests // 5, BATCH)
                    )
                    cpu_per_delta["batch"].append(
                        (ctx.service.cpu_seconds() - cpu) / (flood_requests // 5 * BATCH)
                    )
                await service.new_message()
                async with AsyncExitStack() as agent:
                    send = await service.agent_sender(agent)
                    latencies[f"agent {n}"].append(await _paced(send, viewers, paced_count, warmup))
                await viewers.close()

    def p(name: str, fraction: float) -> float:
        return statistics.median(_ms(run, fraction) for run in latencies[name])

    def rate(name: str) -> float:
        return statistics.median(runs[name])

    b = ctx.backend
    results: list[Result] = []
    for n in VIEWERS:
        floor50 = p("redis", 0.5) + p(f"ws {n}", 0.5)
        floor99 = p("redis", 0.99) + p(f"ws {n}", 0.99)
        details = {
            "service_p50_ms": p(f"svc {n}", 0.5), "service_p99_ms": p(f"svc {n}", 0.99),
            "redis_pubsub_p50_ms": p("redis", 0.5), "redis_pubsub_p99_ms": p("redis", 0.99),
            "bare_ws_p50_ms": p(f"ws {n}", 0.5), "bare_ws_p99_ms": p(f"ws {n}", 0.99),
        }  # fmt: skip
        label = f"Redis pub/sub + bare WS, {n} viewer{'s' if n > 1 else ''}"
        results.append(
            Result(
                f"delta → viewer p50, {n} viewers",
                b,
                "ms",
                p(f"svc {n}", 0.5),
                floor50,
                label,
                Target(high=2) if n <= 10 else None,
                details,
            )
        )
        results.append(
            Result(
                f"delta → viewer p99, {n} viewers",
                b,
                "ms",
                p(f"svc {n}", 0.99),
                floor99,
                label,
                None,
                details,
            )
        )
        details |= {
            "agent_ws_p99_ms": p(f"agent {n}", 0.99),
            "raw_pipeline_p50_ms": p(f"pipe {n}", 0.5),
            "raw_pipeline_p99_ms": p(f"pipe {n}", 0.99),
        }
        results.append(
            Result(
                f"agent WS delta → viewer p50, {n} viewers",
                b,
                "ms",
                p(f"agent {n}", 0.5),
                floor50,
                label,
                None,
                details,
            )
        )
        results.append(Result(f"agent WS delta → viewer p50 vs raw pipeline, {n} viewers", b,
                              "ms", p(f"agent {n}", 0.5), p(f"pipe {n}", 0.5),
                              "Redis publish → subscriber process → bare WS fan-out", None,
                              details))  # fmt: skip
    flood = {
        "ws_flood": rate("ws flood"),
        "posters": FLOOD_POSTERS,
        "batch": BATCH,
        # Service CPU per delta posted (each delivered to the 10 viewers), in µs.
        "server_cpu_us_per_delta": {
            name: round(statistics.median(values) * 1e6, 1)
            for name, values in cpu_per_delta.items()
        },
    }
    results.append(
        Result(
            "deliveries/s, 10 viewers, 1 delta/POST",
            b,
            "/s",
            rate("svc flood 1"),
            5_000,
            "target 5,000/s",
            Target(low=1),
            flood,
        )
    )
    results.append(
        Result(
            f"deliveries/s, 10 viewers, {BATCH} deltas/POST",
            b,
            "/s",
            rate("svc flood batch"),
            5_000,
            "target 5,000/s",
            Target(low=1),
            flood,
        )
    )
    results.append(
        Result("deliveries/s, 10 viewers, vs bare WS", b, "/s", rate("svc flood 1"),
               rate("ws flood"), "bare websockets broadcast flood", None, flood)
    )  # fmt: skip
    return results


async def stream_memory(ctx: BenchContext) -> list[Result]:
    """RSS per idle (connected, subscribed) WebSocket with 1,000 connections."""
    count = 200 if _quick(ctx) else IDLE_CONNECTIONS
    service, floor = Service(ctx), Floor(ctx.service.config.redis_url)
    async with AsyncExitStack() as stack:
        await service.open()
        stack.push_async_callback(service.close)
        await floor.start()
        stack.push_async_callback(floor.stop)

        async def measure(pid: int, open_set: Callable[[int], Awaitable[Viewers]]) -> float:
            # A few connections first (code paths, caches), then the baseline: the allocator
            # keeps freed memory, so warming with the full set would hide the cost.
            warm = await open_set(10)
            await warm.close()
            await asyncio.sleep(0.5)
            before = _rss_kib(pid)
            viewers = await open_set(count)
            await asyncio.sleep(1.0)
            after = _rss_kib(pid)
            await viewers.close()
            return (after - before) / count

        per_service = await measure(ctx.service.pid, service.viewers)

        async def bare(n: int) -> Viewers:
            viewers, driver = await floor.viewers(n)
            await driver.close()
            return viewers

        per_floor = await measure(floor.pid, bare)
    b = ctx.backend
    details = {"connections": count, "service_kib": per_service, "bare_ws_kib": per_floor}
    return [
        Result(f"RSS per idle WebSocket, {count:,} conns", b, "KiB", per_service, 64,
               "target 64 KiB", Target(high=1), details),
        Result(f"RSS per idle WebSocket vs bare, {count:,} conns", b, "KiB", per_service,
               per_floor, "bare websockets server", None, details),
    ]  # fmt: skip


SCENARIOS = {"stream": stream, "stream-memory": stream_memory}
