"""The simulated users and orchestrator, and the audit of what they got.

Each user, in a tenant of ``tenants`` (users are spread evenly), creates a conversation, holds a
WebSocket subscribed to it, and then loops: post a message (with an ``Idempotency-Key``), wait on
the WebSocket for the reply to complete, read the newest page of history, think for a moment.
The orchestrator answers every accepted message: it opens a streaming assistant message, posts
its deltas in batches with a pause between batches (the model "generating"), and completes it.

Every call is timed per operation; failures are counted by operation and cause, never retried
(so the error counts are what users would have seen). When the time is up the users stop posting,
the orchestrator finishes the replies it started, and the audit checks, from the database and from
what each WebSocket received, that every message that got a 201 is stored exactly once, that
``seq`` is gap-free in every conversation, and that every streamed reply is complete: in the
database, and at its viewer with each delta exactly once and in order.
"""

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection, connect

from bench.client import PreparedRequest, RawConnection
from bench.stats import percentile
from conversation_service.db.tables import messages_table
from conversation_service.services.auth import issue_token


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """The shape of the load."""

    users: int = 200
    duration: float = 60.0
    ramp: float = 10.0
    tenants: int = 20
    think: tuple[float, float] = (0.5, 1.5)
    reply_batches: int = 4
    deltas_per_batch: int = 5
    token_interval: float = 0.02
    history_limit: int = 20
    orchestrator_connections: int = 32
    reply_timeout: float = 30.0
    drain_timeout: float = 60.0


class Stats:
    """Latency samples and error counts per operation."""

    def __init__(self) -> None:
        self.samples: defaultdict[str, list[float]] = defaultdict(list)
        self.errors: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def ok(self, operation: str, seconds: float) -> None:
        self.samples[operation].append(seconds)

    def error(self, operation: str, cause: str) -> None:
        self.errors[operation][cause] += 1

    def table(self, elapsed: float) -> list[dict[str, Any]]:
        """One row per operation: count, rate, p50/p95/p99 (ms), errors."""
        rows = []
        for operation in sorted(set(self.samples) | set(self.errors)):
            values = sorted(self.samples.get(operation, []))
            errors = self.errors.get(operation, Counter())
            row: dict[str, Any] = {
                "operation": operation,
                "count": len(values),
                "rate": round(len(values) / elapsed, 1) if elapsed else 0.0,
                "errors": sum(errors.values()),
                "error_causes": dict(errors),
            }
            for name, fraction in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
                row[name] = round(percentile(values, fraction) * 1000, 2) if values else None
            rows.append(row)
        return rows


def request(
    method: str, path: str, *, host: str, headers: dict[str, str], body: Any = None
) -> PreparedRequest:
    """One encoded HTTP/1.1 request (the lean client sends bytes)."""
    payload = orjson.dumps(body) if body is not None else b""
    wire_headers = {"Host": host, **headers}
    if body is not None:
        wire_headers["Content-Type"] = "application/json"
        wire_headers["Content-Length"] = str(len(payload))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in wire_headers.items()
    )
    return PreparedRequest(
        method, path, headers, payload, head.encode("latin-1") + b"\r\n" + payload
    )


class Endpoint:
    """Where the service listens, and the credentials the simulation uses."""

    def __init__(self, host: str, port: int, jwt_secret: str, service_key: str) -> None:
        self.host = host
        self.port = port
        self.authority = f"{host}:{port}"
        self.jwt_secret = jwt_secret
        self.service_key = service_key


async def call(
    stats: Stats,
    operation: str,
    connection: RawConnection,
    prepared: PreparedRequest,
    expected: int,
) -> tuple[int, Any] | None:
    """Send, time and check one request; None (and an error counted) when it failed."""
    started = time.perf_counter()
    try:
        status, body = await asyncio.wait_for(connection.send(prepared), 30)
    except (OSError, TimeoutError, ValueError, ConnectionError) as exc:
        stats.error(operation, type(exc).__name__)
        return None
    elapsed = time.perf_counter() - started
    if status != expected:
        stats.error(operation, f"HTTP {status}")
        return None
    stats.ok(operation, elapsed)
    return status, orjson.loads(body) if body else None


@dataclass
class Reply:
    """One streamed reply as the orchestrator sent it."""

    conversation_id: str
    parent_id: str
    message_id: str | None = None
    text: str = ""
    completed: bool = False


class Orchestrator:
    """Answers every accepted message with a streamed reply over the internal API."""

    def __init__(self, endpoint: Endpoint, config: LoadConfig, stats: Stats) -> None:
        self.endpoint = endpoint
        self.config = config
        self.stats = stats
        self.headers = {"Authorization": f"Bearer {endpoint.service_key}"}
        self.pool: asyncio.Queue[RawConnection] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.replies: list[Reply] = []
        # When each delta left the orchestrator, for the delivery latency at the viewer.
        self.sent_at: dict[tuple[str, int], float] = {}

    async def open(self) -> None:
        for _ in range(self.config.orchestrator_connections):
            self.pool.put_nowait(await RawConnection.open(self.endpoint.host, self.endpoint.port))

    async def close(self) -> None:
        while not self.pool.empty():
            await self.pool.get_nowait().aclose()

    def answer(self, conversation_id: str, parent_id: str) -> Reply:
        reply = Reply(conversation_id, parent_id)
        self.replies.append(reply)
        task = asyncio.create_task(self._stream(reply))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return reply

    async def _post(self, operation: str, path: str, body: Any, expected: int) -> Any:
        connection = await self.pool.get()
        try:
            prepared = request(
                "POST", path, host=self.endpoint.authority, headers=self.headers, body=body
            )
            result = await call(self.stats, operation, connection, prepared, expected)
        finally:
            self.pool.put_nowait(connection)
        return None if result is None else result[1]

    async def _stream(self, reply: Reply) -> None:
        base = f"/internal/v1/conversations/{reply.conversation_id}/messages"
        created = await self._post(
            "orchestrator create reply",
            base,
            {"role": "assistant", "status": "streaming", "parent_id": reply.parent_id},
            201,
        )
        if created is None:
            return
        reply.message_id = mid = created["id"]
        per_batch = self.config.deltas_per_batch
        for batch in range(self.config.reply_batches):
            indexes = range(batch * per_batch, (batch + 1) * per_batch)
            deltas = [{"index": i, "text": f"t{i} "} for i in indexes]
            now = time.perf_counter()
            for i in indexes:
                self.sent_at[(mid, i)] = now
            if (
                await self._post(
                    "orchestrator deltas", f"{base}/{mid}/deltas", {"deltas": deltas}, 202
                )
                is None
            ):
                return
            reply.text += "".join(d["text"] for d in deltas)
            await asyncio.sleep(self.config.token_interval)
        if await self._post("orchestrator complete", f"{base}/{mid}/complete", {}, 200) is not None:
            reply.completed = True

    async def drain(self, seconds: float) -> None:
        """Wait (at most ``seconds``) for the replies still streaming."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=seconds)


@dataclass
class Seen:
    """One reply as a viewer's WebSocket received it."""

    indexes: list[int] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)
    completed: str | None = None


class User:
    """One simulated user: a conversation, a WebSocket on it, and a chat loop."""

    def __init__(
        self,
        index: int,
        endpoint: Endpoint,
        config: LoadConfig,
        stats: Stats,
        orchestrator: Orchestrator,
        run: str,
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.stats = stats
        self.orchestrator = orchestrator
        self.tenant = f"load-{run}-t{index % config.tenants}"
        self.user = f"load-{run}-u{index}"
        token = issue_token(
            endpoint.jwt_secret, tenant=self.tenant, user=self.user, ttl_seconds=7200
        )
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}
        self.conversation_id: str | None = None
        self.accepted: dict[str, str] = {}  # message id -> content, for every 201
        self.seen: defaultdict[str, Seen] = defaultdict(Seen)
        self.waiting: dict[str, tuple[asyncio.Event, float]] = {}
        self.frames = 0
        self.socket: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.rng = random.Random(index)

    def prepared(self, method: str, path: str, body: Any = None, **headers: str) -> PreparedRequest:
        return request(
            method,
            path,
            host=self.endpoint.authority,
            headers={**self.headers, **headers},
            body=body,
        )

    async def run(self, start_at: float, stop_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        http = await RawConnection.open(self.endpoint.host, self.endpoint.port)
        try:
            created = await call(
                self.stats,
                "create conversation",
                http,
                self.prepared("POST", "/api/v1/conversations", {"agent_id": "load-agent"}),
                201,
            )
            if created is None:
                return
            self.conversation_id = created[1]["id"]
            if not await self._subscribe():
                return
            turn = 0
            while time.monotonic() < stop_at:
                turn += 1
                await self._turn(http, turn)
                await asyncio.sleep(self.rng.uniform(*self.config.think))
        finally:
            await http.aclose()

    async def _subscribe(self) -> bool:
        url = f"ws://{self.endpoint.authority}/api/v1/ws?token={self.token}"
        started = time.perf_counter()
        try:
            self.socket = await connect(url, compression=None, open_timeout=30, max_queue=None)
            await self.socket.send(
                orjson.dumps(
                    {"type": "subscribe", "conversation_id": self.conversation_id}
                ).decode()
            )
            while True:
                frame = orjson.loads(await asyncio.wait_for(self.socket.recv(), 30))
                if frame["type"] == "subscribed":
                    break
        except Exception as exc:  # any failure to connect is the user's error to count
            self.stats.error("websocket connect+subscribe", type(exc).__name__)
            return False
        self.stats.ok("websocket connect+subscribe", time.perf_counter() - started)
        self.reader = asyncio.create_task(self._read())
        return True

    async def _read(self) -> None:
        assert self.socket is not None
        try:
            async for raw in self.socket:
                self.frames += 1
                self._on_frame(orjson.loads(raw))
        except Exception as exc:  # counted: a viewer lost its socket
            self.stats.error("websocket", type(exc).__name__)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        data = frame.get("data") or {}
        if kind == "message.delta":
            mid, index = data["message_id"], data["index"]
            seen = self.seen[mid]
            seen.indexes.append(index)
            seen.texts[index] = data["text"]
            sent = self.orchestrator.sent_at.pop((mid, index), None)
            if sent is not None:
                self.stats.ok("delta delivery (post -> viewer)", time.perf_counter() - sent)
        elif kind == "message.completed":
            message = data["message"]
            self.seen[message["id"]].completed = message["content"]
            waiter = self.waiting.pop(message.get("parent_id") or "", None)
            if waiter is not None:
                event, posted_at = waiter
                self.stats.ok(
                    "turn (post -> reply completed at viewer)", time.perf_counter() - posted_at
                )
                event.set()

    async def _turn(self, http: RawConnection, turn: int) -> None:
        assert self.conversation_id is not None
        content = f"{self.user} says hello #{turn}"
        posted_at = time.perf_counter()
        result = await call(
            self.stats,
            "post message",
            http,
            self.prepared(
                "POST",
                f"/api/v1/conversations/{self.conversation_id}/messages",
                {"content": content},
                **{"Idempotency-Key": uuid.uuid4().hex},
            ),
            201,
        )
        if result is not None:
            message_id = result[1]["id"]
            self.accepted[message_id] = content
            done = asyncio.Event()
            self.waiting[message_id] = (done, posted_at)
            self.orchestrator.answer(self.conversation_id, message_id)
            try:
                await asyncio.wait_for(done.wait(), self.config.reply_timeout)
            except TimeoutError:
                self.waiting.pop(message_id, None)
                self.stats.error("turn (post -> reply completed at viewer)", "timeout")
        await call(
            self.stats,
            "list history",
            http,
            self.prepared(
                "GET",
                f"/api/v1/conversations/{self.conversation_id}/messages"
                f"?order=desc&limit={self.config.history_limit}",
            ),
            200,
        )

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self.reader is not None:
            await self.reader


@dataclass
class Outcome:
    """Everything a run measured and what the audit found."""

    elapsed: float
    stats: Stats
    users: list[User]
    orchestrator: Orchestrator
    audit: dict[str, int]


async def simulate(endpoint: Endpoint, config: LoadConfig) -> Outcome:
    """Run the users and the orchestrator for ``config.duration`` seconds, then drain."""
    stats = Stats()
    orchestrator = Orchestrator(endpoint, config, stats)
    await orchestrator.open()
    run = uuid.uuid4().hex[:8]
    users = [User(i, endpoint, config, stats, orchestrator, run) for i in range(config.users)]
    started = time.monotonic()
    stop_at = started + config.ramp + config.duration
    await asyncio.gather(
        *(
            user.run(started + config.ramp * i / max(config.users, 1), stop_at)
            for i, user in enumerate(users)
        )
    )
    await orchestrator.drain(config.drain_timeout)
    # Every user waited for its last reply; frames still in flight get a moment to arrive.
    await asyncio.sleep(0.5)
    elapsed = time.monotonic() - started
    await asyncio.gather(*(user.close() for user in users))
    await orchestrator.close()
    return Outcome(elapsed, stats, users, orchestrator, {})


def audit_viewers(outcome: Outcome) -> dict[str, int]:
    """What each WebSocket received against what the orchestrator streamed."""
    expected_indexes = list(
        range(
            outcome.orchestrator.config.reply_batches * outcome.orchestrator.config.deltas_per_batch
        )
    )
    by_conversation: defaultdict[str, list[Reply]] = defaultdict(list)
    for reply in outcome.orchestrator.replies:
        by_conversation[reply.conversation_id].append(reply)
    found: Counter[str] = Counter()
    for user in outcome.users:
        for reply in by_conversation.get(user.conversation_id or "", []):
            if not reply.completed or reply.message_id is None:
                found["replies not completed by the orchestrator"] += 1
                continue
            seen = user.seen.get(reply.message_id)
            if seen is None:
                found["replies never seen by their viewer"] += 1
                continue
            if seen.indexes != expected_indexes:
                found["replies with missing, repeated or reordered deltas at the viewer"] += 1
            if "".join(seen.texts[i] for i in sorted(seen.texts)) != reply.text:
                found["replies whose deltas differ from what was sent"] += 1
            if seen.completed != reply.text:
                found["replies whose completion differs at the viewer"] += 1
    found["replies at viewers checked"] = sum(
        1 for r in outcome.orchestrator.replies if r.completed
    )
    return dict(found)


async def audit_database(database_url: str, outcome: Outcome) -> dict[str, int]:
    """Every 201 stored exactly once, ``seq`` gap-free, every completed reply complete."""
    engine = create_async_engine(database_url)
    found: Counter[str] = Counter()
    replies = {r.message_id: r for r in outcome.orchestrator.replies if r.message_id}
    try:
        async with engine.connect() as conn:
            for user in outcome.users:
                if user.conversation_id is None:
                    continue
                rows = (
                    await conn.execute(
                        select(
                            messages_table.c.id,
                            messages_table.c.seq,
                            messages_table.c.role,
                            messages_table.c.content,
                            messages_table.c.status,
                        )
                        .where(messages_table.c.conversation_id == uuid.UUID(user.conversation_id))
                        .order_by(messages_table.c.seq)
                    )
                ).all()
                seqs = [row.seq for row in rows]
                if seqs != list(range(1, len(rows) + 1)):
                    found["conversations whose seq has a gap or a repeat"] += 1
                stored = Counter(str(row.id) for row in rows)
                by_id = {str(row.id): row for row in rows}
                for message_id, content in user.accepted.items():
                    if stored[message_id] != 1:
                        found["accepted messages not stored exactly once"] += 1
                    elif by_id[message_id].content != content:
                        found["accepted messages stored with other content"] += 1
                for row in rows:
                    mid = str(row.id)
                    if row.role == "user" and mid not in user.accepted:
                        found["user messages stored without a 201"] += 1
                    reply = replies.get(mid)
                    if (
                        reply is not None
                        and reply.completed
                        and (row.status != "completed" or row.content != reply.text)
                    ):
                        found["completed replies stored incomplete"] += 1
                found["accepted messages checked"] += len(user.accepted)
                found["conversations checked"] += 1
    finally:
        await engine.dispose()
    return dict(found)


def violations(audit: dict[str, int]) -> int:
    """How many problems the audit found (its counters of what was checked excluded)."""
    return sum(count for name, count in audit.items() if not name.endswith("checked"))


def summary_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the per-operation rows."""
    header = (
        f"{'operation':44} {'count':>8} {'rate/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'errors':>7}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        lines.append(
            f"{row['operation']:44} {row['count']:>8} {row['rate']:>8.1f} {ms(row['p50_ms']):>8} "
            f"{ms(row['p95_ms']):>8} {ms(row['p99_ms']):>8} {row['errors']:>7}"
        )
        if row["error_causes"]:
            lines.append(f"{'':46}causes: {row['error_causes']}")
    return "\n".join(lines)
