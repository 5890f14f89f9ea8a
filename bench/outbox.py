"""``outbox`` (issue 4): what the transactional outbox costs a message append.

The service has no switch to append without outbox rows: every user message records one
``jobs`` row (``process_message``) in its transaction, and with
``CONVERSATION_ORCHESTRATOR_CALLBACK_URL`` set, also a ``callback_deliveries`` row and its
``deliver_callback`` job, i.e. 3 rows; after the commit the relay enqueues each job on RQ (in a
thread, off the response path). So the scenario measures, in the same run:

* (a) ``POST …/messages`` on the run's service (callback URL unset: 1 outbox row);
* (b) the same on a second service process with the callback URL set to a local no-op receiver
  (3 outbox rows, 2 RQ enqueues), same database and Redis;
* (c) the driver's cost of those rows: one transaction inserting the message alone, with its
  ``jobs`` row, and with the 3 rows, one connection, serial.

(b)/(a) is the overhead of 2 more outbox rows per append (target ≤ 1.3× on p50; for the
16-client rate, ≥ 1/1.3 ≈ 0.77×). (c) says what those rows cost the database alone and, with its
0-row variant, what an append without any outbox would save at the driver level. No worker runs,
so the receiver is never called; the relay's enqueues are part of what (b) pays. If the service
gains an ``outbox_enabled`` setting, a third service runs with it off and (a) is compared with
that directly (target ≤ 1.3×).
"""

import asyncio
import dataclasses
import tempfile
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg  # type: ignore[import-untyped]
import orjson

from bench.client import PreparedRequest, prepare
from bench.common import compare, http_run, value_row
from bench.harness import BenchContext
from bench.raw import PostgresBackend, SqliteBackend
from bench.raw.base import INSERT_COLUMNS, new_id, new_message_row
from bench.raw.window import open_sqlite
from bench.report import Result, Target
from bench.server import ServiceProcess, free_port
from bench.stats import Measurement, Operation, closed_loop, median_of
from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import callback_deliveries_table as deliveries
from conversation_service.services.callbacks import event_body
from conversation_service.services.outbox import JobKind, JobSpec, queue_for, row_values

CLIENTS = 16
OVERHEAD = 1.3
# A switch the service may get (CONVERSATION_OUTBOX_ENABLED=false: append with no outbox row and
# no enqueue). When its setting exists, a third service runs with it off and the exact overhead
# of the default (1 row) is measured against it.
OUTBOX_SWITCH = "outbox_enabled"
CONTENT = (
    "Could you summarise the last three invoices for ACME Corp and flag anything that looks "
    "unusual compared with the previous quarter? Please keep it short."
)
_JOB_COLUMNS = tuple(
    row_values(JobSpec(JobKind.PROCESS_MESSAGE, "high", "t", None), datetime.now(UTC))
)
_DELIVERY_COLUMNS = tuple(column.name for column in deliveries.c if column.name not in (
    "last_status_code", "delivered_at"))  # fmt: skip


def _outbox_rows(
    message_row: tuple[Any, ...], rows: int, url: str
) -> list[tuple[str, dict[str, Any]]]:
    """The outbox rows an append writes: ``jobs`` for 1; plus a delivery and its job for 3."""
    values = dict(zip(INSERT_COLUMNS, message_row, strict=True))
    conversation_id = values["conversation_id"]
    tenant_id = values["tenant_id"]
    now = datetime.now(UTC)
    message_job = JobSpec(
        kind=JobKind.PROCESS_MESSAGE,
        queue=queue_for(JobKind.PROCESS_MESSAGE, urgent=True),
        tenant_id=tenant_id,
        conversation_id=conversation_id,
        message_id=values["id"],
    )
    out: list[tuple[str, dict[str, Any]]] = []
    if rows >= 1:
        out.append(("jobs", row_values(message_job, now)))
    if rows >= 3:
        delivery_id = new_id()
        message = {
            "id": str(values["id"]),
            "seq": values["seq"],
            "role": values["role"],
            "content": values["content"],
            "created_at": values["created_at"].isoformat(),
        }
        data = {"conversation_id": str(conversation_id), "message": message}
        out.append(
            (
                "callback_deliveries",
                {
                    "id": delivery_id,
                    "tenant_id": tenant_id,
                    "conversation_id": conversation_id,
                    "event_type": "message.created",
                    "url": url,
                    "payload": event_body("message.created", data),
                    "status": "pending",
                    "attempts": 0,
                    "created_at": now,
                },
            )
        )
        callback_job = JobSpec(
            kind=JobKind.DELIVER_CALLBACK,
            queue=queue_for(JobKind.DELIVER_CALLBACK, urgent=True),
            tenant_id=tenant_id,
            conversation_id=conversation_id,
            args={"delivery_id": str(delivery_id)},
            max_attempts=8,
        )
        out.append(("jobs", row_values(callback_job, now)))
    return out


_COLUMNS = {"jobs": _JOB_COLUMNS, "callback_deliveries": _DELIVERY_COLUMNS}
_JSON_COLUMNS = {"args", "result", "payload"}


class OutboxWriter(Protocol):
    """One driver connection appending a message with 0, 1 or 3 outbox rows per transaction."""

    async def append(self, conversation_id: uuid.UUID, tenant_id: str, seq: int, rows: int) -> None:
        """Insert the message and ``rows`` outbox rows in one transaction, then commit."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


def _encode(name: str, value: Any) -> Any:
    if value is None or name not in _JSON_COLUMNS:
        return value
    return orjson.dumps(value).decode()


class PostgresOutboxWriter:
    """asyncpg: ``BEGIN; INSERT message; INSERT outbox…; COMMIT``."""

    def __init__(self, conn: asyncpg.Connection, url: str) -> None:
        self._conn = conn
        self._url = url

    @staticmethod
    def _insert(table: str, columns: Sequence[str]) -> str:
        marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"

    async def append(self, conversation_id: uuid.UUID, tenant_id: str, seq: int, rows: int) -> None:
        """Insert the message and ``rows`` outbox rows in one transaction, then commit."""
        row = new_message_row(conversation_id, tenant_id, seq, CONTENT)
        async with self._conn.transaction():
            await self._conn.execute(self._insert("messages", INSERT_COLUMNS), *row)
            for table, values in _outbox_rows(row, rows, self._url):
                columns = _COLUMNS[table]
                await self._conn.execute(
                    self._insert(table, columns), *(_encode(c, values[c]) for c in columns)
                )

    async def close(self) -> None:
        """Close the connection."""
        await self._conn.close()


def _sqlite(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


class SqliteOutboxWriter:
    """aiosqlite with the service's pragmas: ``INSERT message; INSERT outbox…; COMMIT``."""

    def __init__(self, db: aiosqlite.Connection, url: str) -> None:
        self._db = db
        self._url = url

    @staticmethod
    def _insert(table: str, columns: Sequence[str]) -> str:
        marks = ", ".join("?" for _ in columns)
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"

    async def append(self, conversation_id: uuid.UUID, tenant_id: str, seq: int, rows: int) -> None:
        """Insert the message and ``rows`` outbox rows in one transaction, then commit."""
        row = new_message_row(conversation_id, tenant_id, seq, CONTENT)
        await self._db.execute(
            self._insert("messages", INSERT_COLUMNS), tuple(_sqlite(v) for v in row)
        )
        for table, values in _outbox_rows(row, rows, self._url):
            columns = _COLUMNS[table]
            await self._db.execute(
                self._insert(table, columns),
                tuple(_sqlite(_encode(c, values[c])) for c in columns),
            )
        await self._db.commit()

    async def close(self) -> None:
        """Close the connection."""
        await self._db.close()


async def open_writer(backend: PostgresBackend | SqliteBackend, url: str) -> OutboxWriter:
    """An outbox writer on ``backend``'s database."""
    if isinstance(backend, PostgresBackend):
        return PostgresOutboxWriter(await asyncpg.connect(backend.dsn), url)
    return SqliteOutboxWriter(await open_sqlite(backend.path), url)


@asynccontextmanager
async def no_op_receiver() -> AsyncIterator[str]:
    """A local HTTP endpoint answering 204 to anything; yields its URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}/hooks/conversation"
    finally:
        server.close()
        await server.wait_closed()


def _raw_append(
    writer: OutboxWriter, conversation: uuid.UUID, tenant: str, rows: int, seqs: dict[int, int]
) -> Operation:
    async def operation(_worker: int) -> None:
        seqs[0] += 1
        await writer.append(conversation, tenant, seqs[0], rows)

    return operation


async def outbox(ctx: BenchContext) -> list[Result]:
    """Appends with 1 and 3 outbox rows (callback URL off/on) and the rows' raw cost."""
    counts = ctx.counts
    backend = ctx.raw
    assert isinstance(backend, PostgresBackend | SqliteBackend)
    one, many, warm, cap = (
        counts.append_serial,
        counts.append_concurrent,
        counts.warmup,
        counts.http_seconds,
    )
    runs: defaultdict[str, list[Measurement]] = defaultdict(list)
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(no_op_receiver())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="conversation-bench-")))
        config = dataclasses.replace(
            ctx.service.config, extra_env={"CONVERSATION_ORCHESTRATOR_CALLBACK_URL": url}
        )
        with_callback = await stack.enter_async_context(
            ServiceProcess(config, tmp / "service-callback.log")
        )
        services = {"off": ctx.service, "on": with_callback}
        if OUTBOX_SWITCH in ConversationSettings.model_fields:
            config = dataclasses.replace(
                ctx.service.config,
                extra_env={f"CONVERSATION_{OUTBOX_SWITCH.upper()}": "false"},
            )
            services["none"] = await stack.enter_async_context(
                ServiceProcess(config, tmp / "service-no-outbox.log")
            )
        raw_conversation = await ctx.api.create_conversation()
        writer = await open_writer(backend, url)
        stack.push_async_callback(writer.close)

        def post(service: ServiceProcess, conversation: uuid.UUID) -> PreparedRequest:
            return prepare(
                "POST",
                f"/api/v1/conversations/{conversation}/messages",
                host=f"{service.host}:{service.port}",
                token=ctx.token,
                json_body={"content": CONTENT},
            )

        single: dict[str, list[PreparedRequest]] = {}
        crowd: dict[str, list[PreparedRequest]] = {}
        for name, service in services.items():
            single[name] = [post(service, await ctx.api.create_conversation())]
            crowd[name] = [
                post(service, await ctx.api.create_conversation()) for _ in range(CLIENTS)
            ]
        seqs = {0: 0}
        for _ in range(counts.repeats):
            for rows in (0, 1, 3):
                runs[f"raw {rows}"].append(
                    await closed_loop(
                        _raw_append(writer, raw_conversation, ctx.tenant, rows, seqs),
                        workers=1,
                        total=one,
                        warmup=warm,
                        max_seconds=cap,
                    )
                )
            for name, service in services.items():
                runs[f"http 1 {name}"].append(
                    await http_run(ctx, service, single[name], 201, total=one)
                )
            for name, service in services.items():
                runs[f"http {CLIENTS} {name}"].append(
                    await http_run(ctx, service, crowd[name], 201, total=many)
                )
        await _delete_outbox_rows(backend, ctx.tenant)

    m = {name: median_of(values) for name, values in runs.items()}
    off = "callback off (1 row)"
    solo = (m["http 1 on"], m["http 1 off"])
    busy = (m[f"http {CLIENTS} on"], m[f"http {CLIENTS} off"])
    service_extra = (m["http 1 on"].p50 - m["http 1 off"].p50) * 1e3
    raw_extra = (m["raw 3"].p50 - m["raw 1"].p50) * 1e3
    exact: list[Result] = []
    if "http 1 none" in m:
        none = "no outbox (switch off)"
        exact = [
            compare(
                ctx,
                "append p50, 1 client, 1 outbox row vs none",
                "p50",
                (m["http 1 off"], m["http 1 none"]),
                none,
                Target(high=OVERHEAD),
            ),
            compare(
                ctx,
                f"append rate, {CLIENTS} clients, 1 row vs none",
                "rate",
                (m[f"http {CLIENTS} off"], m[f"http {CLIENTS} none"]),
                none,
                Target(low=round(1 / OVERHEAD, 2)),
            ),
            compare(
                ctx,
                "append p50, 1 client, 3 outbox rows vs none",
                "p50",
                (m["http 1 on"], m["http 1 none"]),
                none,
                None,
            ),
        ]
    return [
        *exact,
        compare(ctx, "append p50, 1 client, 3 vs 1 outbox rows", "p50", solo, off,
                Target(high=OVERHEAD)),
        compare(ctx, "append p99, 1 client, 3 vs 1 outbox rows", "p99", solo, off, None),
        compare(ctx, f"append rate, {CLIENTS} clients, 3 vs 1 rows", "rate", busy, off,
                Target(low=round(1 / OVERHEAD, 2))),
        compare(ctx, "raw txn p50, 3 vs 1 outbox rows", "p50", (m["raw 3"], m["raw 1"]),
                "raw txn, 1 row", None),
        compare(ctx, "raw txn p50, 1 vs 0 outbox rows", "p50", (m["raw 1"], m["raw 0"]),
                "raw txn, message only", None),
        value_row(ctx, "extra p50 of 2 more rows, service vs raw", "ms",
                  (service_extra, raw_extra), "raw txn, 3 − 1 rows", None,
                  {"append_off_p50_ms": round(m["http 1 off"].p50 * 1e3, 4),
                   "raw_0_row_p50_ms": round(m["raw 0"].p50 * 1e3, 4)}),
    ]  # fmt: skip


async def _delete_outbox_rows(backend: PostgresBackend | SqliteBackend, tenant: str) -> None:
    """The run's jobs and deliveries (no foreign key: they outlive their conversations)."""
    statements = (
        "DELETE FROM jobs WHERE tenant_id = {}",
        "DELETE FROM callback_deliveries WHERE tenant_id = {}",
    )
    if isinstance(backend, PostgresBackend):
        conn = await asyncpg.connect(backend.dsn)
        try:
            for statement in statements:
                await conn.execute(statement.format("$1"), tenant)
        finally:
            await conn.close()
        return
    db = await open_sqlite(backend.path)
    try:
        for statement in statements:
            await db.execute(statement.format("?"), (tenant,))
        await db.commit()
    finally:
        await db.close()


SCENARIOS = {"outbox": outbox}
